#!/usr/bin/env python3
"""Idle connections vs latency, per event-loop backend: does a connection that does nothing
cost the others anything?

For each backend (select, poll, epoll) and each count N of idle connections, start
server-eventloop (release build), open N connections that never send a byte, then time
ROUNDS sequential echo round trips (binary protocol, 16-byte payload) on one more connection.
select and poll hand the kernel the whole list of watched descriptors on every wait, so each
round trip pays for all N idle ones; epoll keeps the list in the kernel and pays only for the
ready one. Backends are interleaved within each repetition, and each figure is the median over
repetitions of that run's median (and p99) round trip.

    python3 scripts/idle-connections.py [--counts 0,250,500,900,2000,4000] [--rounds 4000] [--repeat 3]

select cannot watch descriptors >= 1024, so counts above ~1000 are skipped for it (the server
would refuse those connections; see docs/models/eventloop.md). The client is Python, so
absolute round trips include ~20-40 us of interpreter time; compare backends within a row.
Writes results/DATE-idle-connections/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import datetime
import os
import resource
import socket
import statistics
import sys
import time

from lablib import OP_ECHO, build_release, frame, read_reply, results_dir, start_server, write_table


def measure(backend, idle, rounds):
    proc, port = start_server("server-eventloop", "--backend", backend, "--max-connections", "100000")
    idle_socks = []
    try:
        for _ in range(idle):
            idle_socks.append(socket.create_connection(("127.0.0.1", port)))
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"x" * 16
        # Make sure the server has accepted and registered every idle connection: a round
        # trip on a connection opened after them is answered only after they were accepted.
        requests = [frame(OP_ECHO, i + 1, 0, payload) for i in range(rounds + 200)]
        samples = []
        for i, request in enumerate(requests):
            t = time.perf_counter_ns()
            s.sendall(request)
            body = read_reply(s)
            dt = time.perf_counter_ns() - t
            if body[0] != 0 or body[-16:] != payload:
                raise SystemExit(f"{backend}: bad reply {body[:20]!r}")
            if i >= 200:  # warm-up
                samples.append(dt / 1000.0)
        s.close()
        samples.sort()
        return statistics.median(samples), samples[int(len(samples) * 0.99)]
    finally:
        for x in idle_socks:
            x.close()
        proc.terminate()
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description="idle connections vs latency per event-loop backend")
    ap.add_argument("--counts", default="0,250,500,900,2000,4000")
    ap.add_argument("--rounds", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(counts) + 200
    if hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))  # the server inherits it
    build_release()
    results = results_dir("idle-connections", args.results)
    raw = {}
    with open(os.path.join(results, "raw.tsv"), "w") as f:
        f.write("repetition\tidle\tbackend\tmedian_us\tp99_us\n")
        for rep in range(1, args.repeat + 1):
            for idle in counts:
                for backend in ("select", "poll", "epoll"):
                    if backend == "select" and idle > 1000:
                        continue
                    med, p99 = measure(backend, idle, args.rounds)
                    raw.setdefault((idle, backend), []).append((med, p99))
                    f.write(f"{rep}\t{idle}\t{backend}\t{med:.1f}\t{p99:.1f}\n")
            print(f"repetition {rep} of {args.repeat} done", file=sys.stderr)

    def cell(idle, backend):
        runs = raw.get((idle, backend))
        if not runs:
            return "n/a (fd >= 1024)"
        return f"{statistics.median(r[0] for r in runs):.1f} / {statistics.median(r[1] for r in runs):.1f}"

    lines = ["| idle connections | select: p50 / p99 (us) | poll: p50 / p99 (us) | epoll: p50 / p99 (us) |",
             "|---:|---:|---:|---:|"]
    for idle in counts:
        lines.append(f"| {idle} | {cell(idle, 'select')} | {cell(idle, 'poll')} | {cell(idle, 'epoll')} |")
    lines.append("")
    lines.append(f"One connection doing {args.rounds} sequential 16-byte echo round trips (Python client) while "
                 f"N connections sit idle; median over {args.repeat} interleaved repetitions; "
                 f"{os.cpu_count()} CPUs; {datetime.date.today()}.")
    write_table(results, "\n".join(lines))


if __name__ == "__main__":
    main()
