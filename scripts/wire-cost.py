#!/usr/bin/env python3
"""Issue 16: what a message costs end to end, through a server, on loopback and a slow link.

The record workload through a real server, per format, record and compression, on loopback and
on a bandwidth-limited link: the bytes each request puts on the wire, the CPU it costs the
client and the server, and what that does to throughput and latency. record-bench.py measured
the codec alone and estimated from its medians that snappy pays in time only on links slower
than about 6 Gbit/s; this measures it.

Each run is `loadgen run --op record --format F --record R --entropy E --compress C` against one
server-eventloop (one thread, epoll): every request is a structured record, which the server
decodes, changes (favourite_number + 1) and encodes back. The matrix:
- link: loopback (server and loadgen in this network namespace, 127.0.0.1) and tbf (below);
- record: book (the book's Person, about 60 bytes framed), nested (with an address, about 95),
  large (512 interests and an address, about 7-8 KB);
- format: positional, json, protobuf, avro; compress: none, snappy (records of at least
  --compress-threshold bytes, loadgen's default 256: so book and nested records go raw, and
  their snappy cells repeat the raw ones, flag byte and all; 0 makes snappy try them all);
- entropy: low and high, for `large` only (its interests repetitive text or random letters:
  what snappy can and cannot shrink); book and nested run with low.
That is 32 cells per link. One server per link serves all of its cells, its pid passed as
--server-pid so loadgen measures the server's CPU per request over each measured window. The
cells run in --repeat rounds; each round runs every cell once, in an order shuffled by a fixed
seed (the link's name and the round's number), so that drift (a warming machine, a neighbour
on the host) falls on every cell alike rather than on the last ones. The table gives the
medians over the rounds of the runs that counted: a run whose loadgen exited nonzero, timed
out, or whose report says not ok or not valid stays in runs.jsonl with its exit code and is
left out of the medians, and the table says how many were.

The tbf link: two network namespaces (echolab-wc-srv-PID, echolab-wc-cli-PID), a veth pair
between them (10.77.0.1/30 the server's end, 10.77.0.2/30 loadgen's, MTU 1500), and on BOTH
ends a token bucket, `tc qdisc add dev IF root tbf rate RATE burst B latency 50ms`, so requests
and replies each have RATE one way (a full-duplex link). This kernel has no netem, so there is
no delay to emulate: the link is slow, not far. The server runs under `ip netns exec` in the
one namespace, loadgen in the other. How the bucket is sized:
- burst B is what tbf lets through at once, at memory speed, before the rate applies. A real
  link of RATE never goes faster than RATE, so B is kept small: 1 ms of the rate (12 500 bytes
  at 100 Mbit/s, about 8 full frames), and at least 4 KiB. tbf refills the bucket on a timer,
  so a bucket much smaller than what arrives between wakeups costs throughput (and a timer
  wakeup every few frames); at 100 Mbit/s, bursts of 4 KiB, 12 500 B and 64 KiB all gave the
  same 93.2-93.5 Mbit/s of 64 KiB echoes in a trial. veth hands tbf 64 KiB GSO packets, which
  it cuts into frames when they exceed the bucket.
- latency 50ms sets the queue: up to 50 ms of data (625 KB at 100 Mbit/s) waits for tokens
  before tbf drops. A closed loop of --connections requests in flight never queues that much
  (4 x 64 KiB at most, in the check below), so the link delays, and never drops.
tbf counts whole frames: Ethernet, IP and TCP headers (66 bytes a segment) and the ACKs going
the other way use the rate too. So for small records the wire carries much more than
`bytes/req`, which counts the echolab frame only (loopback, with its 64 KiB MTU, splits
nothing). The kernel's work for the shaping is charged to whichever process is running when it
happens, so client and server µs/req on the tbf link include some of it.

Before the matrix the tbf link is checked: 64 KiB echoes over 4 connections for --seconds
(at least 2 s), each direction's bytes per second must come to 50%-110% of the rate, or the
script stops there (trials at 100 Mbit/s: 93.1-93.6 Mbit/s each way, the rest headers;
1 connection gets half, as each direction then idles while the other carries the exchange).
Setting up the link needs root and iproute2's `ip` and `tc`; every namespace, link and server
is removed on the way out (normal end, error, Ctrl-C, SIGTERM; deleting a namespace deletes
its end of the veth and its qdisc). A run killed with SIGKILL leaves its namespaces behind;
the next run deletes those whose PID is gone.

    sudo python3 scripts/wire-cost.py [--seconds 3] [--repeat 3] [--connections 4]
        [--rate-mbit 100] [--links loopback,tbf] [--warmup 1] [--compress-threshold BYTES]
        [--quick] [--out DIR] [--bin-dir DIR] [--smoke-echo]
--quick: a smoke test of about a minute: 1 round of 1 s runs after 0.25 s of warmup, only the
book record on loopback and only the large one on tbf (explicit --seconds, --repeat, --warmup
still win). --bin-dir DIR: take server-eventloop and loadgen from DIR as they are, without
building (default: build target/release first, as the other scripts do). --smoke-echo: checks
the harness (namespaces, tbf, runner, medians, table) with a loadgen that has no record
workload: each cell runs `--op echo --payload N`, N about the record's positional size (48,
82, 7 190 B), so format, compress and entropy change nothing and the table is marked as such.
Writes results/DATE-wire-cost/ (runs.jsonl: one line per run, the cell and its figures;
table.md: one table per link; tbf-check.json: the link check's figures and loadgen report;
machine.txt).
"""
import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from lablib import ROOT, build_release, results_dir, write_table

RECORDS = ["book", "nested", "large"]
FORMATS = ["positional", "json", "protobuf", "avro"]
COMPRESS = ["none", "snappy"]
ENTROPY = {"book": ["low"], "nested": ["low"], "large": ["low", "high"]}
LINKS = ["loopback", "tbf"]
CELL_KEYS = ["link", "record", "entropy", "format", "compress"]
QUICK_RECORDS = {"loopback": ["book"], "tbf": ["large"]}
# --smoke-echo: an echo payload about each record's positional size (record-bench.py's table).
SMOKE_PAYLOAD = {"book": 48, "nested": 82, "large": 7190}
SERVER = "server-eventloop"
SRV_ADDR, CLI_ADDR = "10.77.0.1", "10.77.0.2"
NS_PREFIX = "echolab-wc-"
CHECK_PAYLOAD, CHECK_CONNECTIONS, CHECK_LOW, CHECK_HIGH = 65536, 4, 0.5, 1.1


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised like SIGINT's KeyboardInterrupt so every `finally` runs."""


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def sh(cmd, what):
    """Runs an ip/tc command; stops the script with one line saying what failed."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise SystemExit(f"wire-cost.py: {what} failed: {' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def require_root_tools():
    if os.geteuid() != 0:
        raise SystemExit("wire-cost.py: the tbf link needs root, for network namespaces and tc "
                         "(run it with sudo, or with --links loopback)")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"wire-cost.py: the tbf link needs {' and '.join(missing)} (Debian: apt-get install iproute2)")


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_stale_namespaces():
    """Deletes this script's namespaces left by a run that was killed before it could clean up
    (SIGKILL): those whose PID is no longer a process."""
    for name in netns_names():
        m = re.fullmatch(re.escape(NS_PREFIX) + r"(?:srv|cli)-(\d+)", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            print(f"deleting {name}, left by an earlier run (pid {m.group(1)} is gone)", file=sys.stderr)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class TbfLink:
    """Two namespaces joined by a veth pair, a tbf qdisc on each end."""

    def __init__(self, rate_mbit):
        pid = os.getpid()
        self.srv_ns, self.cli_ns = f"{NS_PREFIX}srv-{pid}", f"{NS_PREFIX}cli-{pid}"
        self.srv_if, self.cli_if = f"wc{pid}s", f"wc{pid}c"  # at most 15 characters
        self.rate_mbit = rate_mbit
        self.burst = max(4096, int(rate_mbit * 1e6 / 8 / 1000))  # 1 ms of the rate, >= 4 KiB
        self.qdisc = f"tbf rate {rate_mbit:g}mbit burst {self.burst} latency 50ms"

    def up(self):
        sh(["ip", "netns", "add", self.srv_ns], "creating a namespace")
        sh(["ip", "netns", "add", self.cli_ns], "creating a namespace")
        # Both ends created inside their namespaces at once: nothing of ours is ever left in
        # this namespace, even by an interruption between two commands.
        sh(["ip", "link", "add", self.srv_if, "netns", self.srv_ns, "type", "veth",
            "peer", "name", self.cli_if, "netns", self.cli_ns], "creating the veth pair")
        for ns, dev, addr in ((self.srv_ns, self.srv_if, SRV_ADDR), (self.cli_ns, self.cli_if, CLI_ADDR)):
            sh(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev], "addressing the veth")
            sh(["ip", "-n", ns, "link", "set", dev, "up"], "bringing the veth up")
            sh(["ip", "-n", ns, "link", "set", "lo", "up"], "bringing lo up")
            sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *self.qdisc.split()], "adding the tbf qdisc")

    def down(self):
        names = netns_names()
        for ns in (self.srv_ns, self.cli_ns):
            if ns in names:
                done = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"could not delete namespace {ns}: {done.stderr.strip()}", file=sys.stderr)

    def qdisc_stats(self):
        """tbf's own counters on both ends (sent, dropped, overlimits), for the notes."""
        out = []
        for ns, dev in ((self.srv_ns, self.srv_if), (self.cli_ns, self.cli_if)):
            text = subprocess.run(["tc", "-n", ns, "-s", "qdisc", "show", "dev", dev],
                                  capture_output=True, text=True).stdout
            m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", text)
            if m:
                out.append(dict(zip(("bytes", "packets", "dropped", "overlimits"), map(int, m.groups()))))
        return out


def start_server_in(prefix, host, bin_dir):
    """server-eventloop on HOST, port 0, run under PREFIX (`ip netns exec NS`, or nothing);
    returns (process, port). lablib.start_server's way, which cannot take a prefix: `ip netns
    exec` execs the server, so the process is the server itself (its pid is what --server-pid
    needs). Killed here if anything, an interruption included, stops it before it listens."""
    proc = subprocess.Popen([*prefix, os.path.join(bin_dir, SERVER), "--addr", f"{host}:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"{SERVER} did not start{' in ' + prefix[-1] if prefix else ''}: {line!r}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, int(line.rsplit(":", 1)[1])


class Deferred:
    """Holds SIGINT, SIGTERM and SIGHUP while the links come down, and raises the first one
    after: a second Ctrl-C must not leave a namespace half deleted."""

    def __enter__(self):
        self.caught = None
        self.old = {s: signal.signal(s, self.hold) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def hold(self, signum, _frame):
        self.caught = self.caught or signum

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        if self.caught and exc[0] is None:
            if self.caught == signal.SIGINT:
                raise KeyboardInterrupt
            raise Interrupted(signal.Signals(self.caught).name)


def stop_server(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadgen(bin_dir, prefix, addr, server_pid, workload, connections, seconds, warmup, tmp):
    """One `loadgen run`; returns (exit code, report or None, what stderr said last). An exit code
    of "timeout" means loadgen outlived its own duration by 30 s and was killed."""
    report_path = os.path.join(tmp, "report.json")
    if os.path.exists(report_path):
        os.remove(report_path)
    cmd = [*prefix, os.path.join(bin_dir, "loadgen"), "run", "--addr", addr, "--protocol", "binary",
           "-c", str(connections), "-d", f"{seconds:g}s", "--warmup", f"{warmup:g}s",
           "--server-pid", str(server_pid), "--progress", "never", "--json", report_path, *workload]
    try:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=seconds + warmup + 30)
        rc, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        err = e.stderr or ""
        rc, err = "timeout", err.decode(errors="replace") if isinstance(err, bytes) else err
    report = None
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
    lines = [l.strip() for l in err.splitlines() if l.strip()]
    # clap's "error: ..." line says what was wrong; its last line only points at --help.
    last = next((l for l in lines if l.startswith("error:")), lines[-1] if lines else "")
    return rc, report, last


def workload_flags(cell, args):
    if args.smoke_echo:
        return ["--op", "echo", "--payload", str(SMOKE_PAYLOAD[cell["record"]])]
    flags = ["--op", "record", "--format", cell["format"], "--record", cell["record"],
             "--entropy", cell["entropy"], "--compress", cell["compress"]]
    if args.compress_threshold is not None:
        flags += ["--compress-threshold", str(args.compress_threshold)]
    return flags


def figures(report):
    """The figures a run line and the table keep, from loadgen's JSON report."""
    if report is None:
        return {}
    bpr = report.get("bytes_per_request") or {}
    lat = report.get("latency_us") or {}
    return {
        "ok": report.get("ok"), "valid": report.get("valid"),
        "throughput_rps": report.get("throughput_rps"),
        "bytes_sent": bpr.get("sent"), "bytes_received": bpr.get("received"),
        "client_us": (report.get("client_cpu") or {}).get("us_per_request"),
        "server_us": (report.get("server") or {}).get("cpu_us_per_request"),
        "p50_us": lat.get("p50"), "p99_us": lat.get("p99"), "p999_us": lat.get("p999"),
        "counts": report.get("counts"),
        "errors": {k: v for k, v in (report.get("errors") or {}).items() if v},
        "notes": report.get("notes") or [],
    }


def counted(run):
    return run["rc"] == 0 and run.get("ok") is True and run.get("valid") is not False


def cells_for(link, records):
    return [{"link": link, "record": r, "entropy": e, "format": f, "compress": c}
            for r in records for e in ENTROPY[r] for f in FORMATS for c in COMPRESS]


def check_tbf(link, bin_dir, srv, port, seconds, tmp):
    """64 KiB echoes through the link: each direction's payload rate must be near tbf's."""
    rc, report, last = loadgen(bin_dir, ["ip", "netns", "exec", link.cli_ns], f"{SRV_ADDR}:{port}", srv.pid,
                               ["--op", "echo", "--payload", str(CHECK_PAYLOAD)], CHECK_CONNECTIONS,
                               max(2.0, seconds), 0.5, tmp)
    if report is None or rc != 0 or not report.get("ok"):
        raise SystemExit(f"wire-cost.py: the tbf check's echo run failed (exit {rc}): {last}")
    rps = report["throughput_rps"]
    up = rps * report["bytes_per_request"]["sent"] * 8 / 1e6
    down = rps * report["bytes_per_request"]["received"] * 8 / 1e6
    check = {"payload": CHECK_PAYLOAD, "connections": CHECK_CONNECTIONS, "rate_mbit": link.rate_mbit,
             "qdisc": link.qdisc, "requests_mbit": up, "replies_mbit": down, "throughput_rps": rps,
             "p99_us": report["latency_us"]["p99"], "qdisc_stats": link.qdisc_stats(), "report": report}
    print(f"tbf check: 64 KiB echoes, {CHECK_CONNECTIONS} connections: requests {up:.1f} Mbit/s, replies "
          f"{down:.1f} Mbit/s, of {link.rate_mbit:g}", file=sys.stderr)
    for name, v in (("requests", up), ("replies", down)):
        if not CHECK_LOW * link.rate_mbit <= v <= CHECK_HIGH * link.rate_mbit:
            raise SystemExit(f"wire-cost.py: tbf does not limit as configured: {name} went at {v:.1f} Mbit/s through "
                             f"a {link.rate_mbit:g} Mbit/s tbf ({CHECK_LOW:.0%}-{CHECK_HIGH:.0%} expected); "
                             f"not measuring on it")
    return check


def run_link(link_name, args, bin_dir, runs_file, tmp, checks):
    """Every cell of one link, --repeat rounds; returns the runs."""
    records = QUICK_RECORDS[link_name] if args.quick else RECORDS
    cells = cells_for(link_name, records)
    tbf, srv, runs = None, None, []
    try:
        if link_name == "tbf":
            tbf = TbfLink(args.rate_mbit)
            tbf.up()
            srv, port = start_server_in(["ip", "netns", "exec", tbf.srv_ns], SRV_ADDR, bin_dir)
            prefix, addr = ["ip", "netns", "exec", tbf.cli_ns], f"{SRV_ADDR}:{port}"
            checks["tbf"] = check_tbf(tbf, bin_dir, srv, port, args.seconds, tmp)
        else:
            srv, port = start_server_in([], "127.0.0.1", bin_dir)
            prefix, addr = [], f"127.0.0.1:{port}"
        total = len(cells) * args.repeat
        for rnd in range(args.repeat):
            order = cells[:]
            random.Random(f"{link_name}-{rnd}").shuffle(order)
            for cell in order:
                if srv.poll() is not None:
                    raise SystemExit(f"wire-cost.py: {SERVER} exited (code {srv.returncode}) on the {link_name} link")
                flags = workload_flags(cell, args)
                rc, report, last = loadgen(bin_dir, prefix, addr, srv.pid, flags, args.connections, args.seconds,
                                           args.warmup, tmp)
                if rc == 2:
                    # Bad flags are never a measurement: every other run would be refused alike.
                    raise SystemExit(f"wire-cost.py: loadgen refused the flags ({' '.join(flags)}): {last}")
                run = {**cell, "round": rnd, "workload": " ".join(flags), "rc": rc, **figures(report)}
                if rc != 0:
                    run["stderr"] = last
                runs.append(run)
                runs_file.write(json.dumps(run) + "\n")
                runs_file.flush()
                tp, tx, rx = run.get("throughput_rps"), run.get("bytes_sent"), run.get("bytes_received")
                got = f"{tp:.0f} req/s, {tx:.0f}/{rx:.0f} B" if None not in (tp, tx, rx) else "no report"
                print(f"[{link_name} {len(runs)}/{total}] {' '.join(cell[k] for k in CELL_KEYS[1:])}: {got}"
                      + ("" if counted(run) else f"  (excluded: exit {rc}, ok {run.get('ok')})"), file=sys.stderr)
        if tbf:
            checks["tbf"]["qdisc_stats_end"] = tbf.qdisc_stats()
    finally:
        with Deferred():
            stop_server(srv)
            if tbf:
                tbf.down()
    return runs


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def num(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}".replace(",", " ")


def table(link_name, runs, args, checks):
    lines = [f"### {link_name}", ""]
    if link_name == "tbf":
        c = checks.get("tbf")
        lines += [f"veth between two network namespaces, `{c['qdisc'] if c else ''}` on both ends (MTU 1500). "
                  + (f"Link check: 64 KiB echoes over {c['connections']} connections moved {c['requests_mbit']:.1f} "
                     f"Mbit/s of requests and {c['replies_mbit']:.1f} of replies through the {c['rate_mbit']:g} Mbit/s "
                     f"bucket." if c else "")
                  + (f" tbf dropped {sum(q['dropped'] for q in c['qdisc_stats_end'])} of "
                     f"{sum(q['packets'] for q in c['qdisc_stats_end'])} packets over the link's runs."
                     if c and c.get("qdisc_stats_end") else ""), ""]
    else:
        lines += ["server and loadgen in one network namespace, 127.0.0.1 (loopback, MTU 65 536).", ""]
    lines += ["| link | record | entropy | format | compress | bytes/req sent | bytes/req received | throughput rps "
              "| client µs/req | server µs/req | p99 µs | reply Mbit/s | runs counted |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    seen = []
    for run in runs:
        key = (run["record"], run["entropy"], run["format"], run["compress"])
        if key not in seen:
            seen.append(key)
    seen.sort(key=lambda k: (RECORDS.index(k[0]), ENTROPY[k[0]].index(k[1]), FORMATS.index(k[2]), COMPRESS.index(k[3])))
    excluded = 0
    for key in seen:
        all_runs = [r for r in runs if (r["record"], r["entropy"], r["format"], r["compress"]) == key]
        good = [r for r in all_runs if counted(r)]
        excluded += len(all_runs) - len(good)
        tp, rx = med(good, "throughput_rps"), med(good, "bytes_received")
        mbit = None
        if good:
            mbit = statistics.median(r["throughput_rps"] * r["bytes_received"] * 8 / 1e6 for r in good)
        cols = [link_name, *key, num(med(good, "bytes_sent"), 1), num(rx, 1), num(tp), num(med(good, "client_us"), 2),
                num(med(good, "server_us"), 2), num(med(good, "p99_us")), num(mbit, 1), f"{len(good)}/{len(all_runs)}"]
        lines.append("| " + " | ".join(cols) + " |")
    lines.append("")
    lines.append(f"{excluded} of {len(runs)} runs excluded from the medians (loadgen exited nonzero or timed out, or "
                 f"its report said not ok or not valid; they are in runs.jsonl)." if excluded else
                 f"All {len(runs)} runs counted.")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, help="measured time per run (default 3; --quick: 1)")
    ap.add_argument("--warmup", type=float, help="unmeasured time before each run (default 1; --quick: 0.25)")
    ap.add_argument("--repeat", type=int, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--connections", type=int, default=4,
                    help="loadgen connections, one request in flight each (default 4)")
    ap.add_argument("--rate-mbit", type=float, default=100.0, help="the tbf link's rate each way, Mbit/s (default 100)")
    ap.add_argument("--links", default="loopback,tbf", help="comma-separated: loopback, tbf (default both)")
    ap.add_argument("--compress-threshold", type=int, metavar="BYTES", help="passed to loadgen (default: loadgen's)")
    ap.add_argument("--quick", action="store_true", help="a smoke test of about a minute (see the docstring)")
    ap.add_argument("--out", default=os.environ.get("RESULTS"), help="write here instead of results/DATE-wire-cost")
    ap.add_argument("--bin-dir", help="take the binaries from DIR as they are (default: build target/release)")
    ap.add_argument("--smoke-echo", action="store_true",
                    help="check the harness without the record workload: echo a record-sized payload per cell")
    args = ap.parse_args()
    args.seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 1.0)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    links = [l.strip() for l in args.links.split(",") if l.strip()]
    bad = [l for l in links if l not in LINKS]
    if bad or not links:
        ap.error(f"--links: {', '.join(bad) or 'none given'}; choose from {', '.join(LINKS)}")
    if args.seconds <= 0 or args.warmup < 0 or args.repeat < 1 or args.connections < 1 or args.rate_mbit <= 0:
        ap.error("--seconds, --repeat, --connections and --rate-mbit must be positive, --warmup at least 0")
    if "tbf" in links:
        require_root_tools()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if args.bin_dir:
        bin_dir = os.path.abspath(args.bin_dir)
    else:
        build_release("echolab-servers", "echolab-loadgen")
        bin_dir = os.path.join(ROOT, "target", "release")
    for b in (SERVER, "loadgen"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise SystemExit(f"wire-cost.py: no {b} in {bin_dir}")
    if "tbf" in links:
        delete_stale_namespaces()
    out = results_dir("wire-cost", args.out)
    started = time.time()
    all_runs, checks = {}, {}
    try:
        with tempfile.TemporaryDirectory() as tmp, open(os.path.join(out, "runs.jsonl"), "w") as runs_file:
            for link_name in links:
                all_runs[link_name] = run_link(link_name, args, bin_dir, runs_file, tmp, checks)
    except (KeyboardInterrupt, Interrupted) as e:
        # The links are down and the servers gone (run_link's finally); what was measured is in runs.jsonl.
        print(f"\nwire-cost.py: interrupted ({str(e) or 'SIGINT'}): "
              f"the runs so far are in {os.path.relpath(out, ROOT)}/runs.jsonl, no table written", file=sys.stderr)
        raise SystemExit(130)
    if "tbf" in checks:
        with open(os.path.join(out, "tbf-check.json"), "w") as f:
            json.dump(checks["tbf"], f, indent=1)

    threshold = args.compress_threshold if args.compress_threshold is not None else "256 (loadgen's default)"
    lines = []
    if args.smoke_echo:
        lines += ["**Harness check (--smoke-echo), not the experiment:** every cell ran `--op echo` with a payload of "
                  "about the record's positional size (book 48 B, nested 82 B, large 7 190 B); format, compress "
                  "and entropy changed nothing.", ""]
    lines += [f"server-eventloop (one thread, epoll) decoding, changing and encoding back each record (`loadgen run "
              f"--op record`, binary protocol), {args.connections} connections, one request in flight each; "
              f"{args.seconds:g} s runs after {args.warmup:g} s warmup, "
              f"{f'medians of {args.repeat} rounds, each' if args.repeat > 1 else 'one round,'} running every "
              f"cell once in a seeded shuffled order. snappy compresses records of at least "
              f"{threshold} bytes. Bytes per request count the echolab frame, not TCP/IP headers; reply Mbit/s is "
              f"throughput x bytes/req received, so on the tbf link it stays under the rate by the headers' share; "
              f"server µs/req is the server process's CPU over the measured window (--server-pid). "
              f"{time.time() - started:.0f} s in all.", ""]
    for link_name in links:
        lines += table(link_name, all_runs[link_name], args, checks)
        lines.append("")
    lines.append(f"Made by `{shlex.join(['python3', 'scripts/wire-cost.py', *sys.argv[1:]])}`.")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as e:
        # Before or after the links (building, waiting for an idle machine): nothing to undo.
        print(f"\nwire-cost.py: interrupted ({str(e) or 'SIGINT'})", file=sys.stderr)
        sys.exit(130)
