#!/usr/bin/env python3
"""A flooding client beside a PING: how long one request waits in server-eventloop's loop while
another connection never lets its socket run dry. The figures behind docs/models/eventloop.md's
read budget.

The loop reads a connection "until EAGAIN" (edge-triggered epoll reports readiness once). A
client that keeps its pipeline full and reads its replies would never let that happen, and
every other client would wait for it: before commit 5a8846d, a PING waited as long as the
flood lasted. Since then each connection reads at most 64 KiB per turn and one that spent its
budget waits on a still-ready list behind everyone else's events.

For each backend (epoll, poll), start server-eventloop --protocol resp; a flooder (its own
process, so the PING client's timing does not share a Python interpreter with it) writes
bursts of 5000 pipelined `PING` commands and reads every reply for SECONDS; from 300 ms in,
a second client sends one PING at a time, 200 ms apart, and times each reply. Only PINGs
sent while the flood ran count. `--before COMMIT` also measures COMMIT's server-eventloop
(extracted with `git archive` under target/, built with the same profile): 4ef3ad3, the
commit before the fix, shows the starvation itself. The fix's review measured in a debug
build, where the server is slower and the flood fills its socket more easily: --profile debug.

    python3 scripts/eventloop-flood.py [--seconds 4] [--pings 10] [--profile release|debug] [--before 4ef3ad3] [--results DIR]

Writes results/DATE-eventloop-flood/ (results/DATE-eventloop-flood-debug/ with --profile debug):
table.md, raw.tsv (every PING's wait), machine.txt.
"""
import argparse
import datetime
import multiprocessing
import os
import selectors
import socket
import statistics
import subprocess
import time

from lablib import ROOT, build_at_commit, results_dir, start_server, write_table, write_tsv

BURST = b"PING\r\n" * 5000  # as servers/tests/regressions.rs's flooder
PONG = b"+PONG\r\n"


def flood(port, seconds, replies):
    """Keeps the pipeline full for SECONDS, reading every reply; REPLIES gets the count."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    written, received, until = 0, 0, time.monotonic() + seconds
    while time.monotonic() < until:
        for _, mask in sel.select(timeout=0.1):
            if mask & selectors.EVENT_WRITE:
                try:
                    written += s.send(BURST[written % len(BURST):])
                except BlockingIOError:
                    pass
            if mask & selectors.EVENT_READ:
                try:
                    chunk = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise SystemExit("flooder: the server closed the connection")
                received += len(chunk)
    replies.value = received // len(PONG)
    s.close()


def ping_waits(port, seconds, pings):
    """[(wait in ms, sent while the flood ran)] for up to PINGS sequential PINGs."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(seconds + 30)  # a starved PING waits for the whole flood: let it
    flood_ends = time.monotonic() + seconds - 0.3  # called 300 ms after the flood began
    waits = []
    for _ in range(pings):
        if time.monotonic() >= flood_ends:
            break
        t = time.monotonic()
        s.sendall(b"PING\r\n")
        got = b""
        while len(got) < len(PONG):
            chunk = s.recv(len(PONG) - len(got))
            if not chunk:
                raise SystemExit("ping client: the server closed the connection")
            got += chunk
        if got != PONG:
            raise SystemExit(f"ping client: {got!r}")
        waits.append(((time.monotonic() - t) * 1000, t < flood_ends))
        time.sleep(0.2)
    s.close()
    return waits


def measure(bin_dir, backend, seconds, pings):
    """(waits, flooder replies per second) for one server."""
    proc, port = start_server("server-eventloop", "--protocol", "resp", "--backend", backend, bin_dir=bin_dir)
    try:
        # fork: this process is single-threaded, and the child needs nothing re-imported.
        ctx = multiprocessing.get_context("fork")
        replies = ctx.Value("q", 0)
        flooder = ctx.Process(target=flood, args=(port, seconds, replies))
        flooder.start()
        time.sleep(0.3)  # let the flood build up, as the regression test does
        waits = ping_waits(port, seconds, pings)
        flooder.join()
        if flooder.exitcode != 0:
            raise SystemExit(f"{backend}: the flooder failed")
        return waits, replies.value / seconds
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def build(profile, commit=None):
    """The directory holding server-eventloop of this tree, or of COMMIT (built apart, under
    target/, so the current binaries stay as they are)."""
    flags = ["--release"] if profile == "release" else []
    if commit is None:
        subprocess.run(["cargo", "build", "-q", *flags, "-p", "echolab-servers", "--bin", "server-eventloop"],
                       cwd=ROOT, check=True)
        return os.path.join(ROOT, "target", profile)
    return build_at_commit(commit, "echolab-servers", "server-eventloop", profile)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="how long the flood lasts")
    ap.add_argument("--pings", type=int, default=10, help="PINGs per server, 200 ms apart, while the flood runs")
    ap.add_argument("--backends", default="epoll,poll")
    ap.add_argument("--profile", choices=("release", "debug"), default="release")
    ap.add_argument("--before", metavar="COMMIT", help="also measure COMMIT's server (4ef3ad3: before the read budget)")
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()

    servers = [("this tree", build(args.profile))]
    if args.before:
        servers.append((f"{args.before} (before the fix)", build(args.profile, args.before)))
    # A debug run is a run of its own, beside the release one: its own directory.
    path = results_dir("eventloop-flood" + ("-debug" if args.profile == "debug" else ""), args.results)

    raw = ["server\tbackend\tping\twait_ms\tduring_flood"]
    lines = ["| server | backend | PINGs during the flood | wait p50 (ms) | wait max (ms) | flooder's replies/s |",
             "|---|---|---:|---:|---:|---:|"]
    for label, bin_dir in servers:
        for backend in args.backends.split(","):
            waits, rate = measure(bin_dir, backend, args.seconds, args.pings)
            for i, (ms, during) in enumerate(waits, 1):
                raw.append(f"{label}\t{backend}\t{i}\t{ms:.2f}\t{int(during)}")
            during = [ms for ms, d in waits if d]
            if not during:
                raise SystemExit(f"{label}, {backend}: no PING was sent while the flood ran (raise --seconds)")
            lines.append(f"| {label} | {backend} | {len(during)} | {statistics.median(during):.2f} | "
                         f"{max(during):.2f} | {rate:,.0f} |")
    lines += ["",
              f"server-eventloop --protocol resp ({args.profile} build). A flooder keeps {len(BURST) // 6} pipelined "
              f"PINGs in flight for {args.seconds:g} s and reads every reply; from 300 ms in, another client sends one "
              f"PING at a time, 200 ms apart (at most {args.pings}), and times it. A PING sent before the fix waits "
              f"for the flood to end, so its wait is bounded by the flood's length, not by the server. "
              f"{os.cpu_count()} CPUs; {datetime.date.today()}."]
    write_tsv(path, "raw.tsv", raw)
    before = f" --before {args.before}" if args.before else ""
    print(f"python3 scripts/eventloop-flood.py --seconds {args.seconds:g} --pings {args.pings} "
          f"--backends {args.backends} --profile {args.profile}{before}")
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
