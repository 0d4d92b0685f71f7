#!/usr/bin/env python3
"""What server-prefork's workers cost in memory, idle: the figure behind its default of 256.

For each worker count, start server-prefork (release build, --accept shared), wait a second,
and sum PSS (/proc/PID/smaps_rollup) over the parent and its workers; then open one connection
per worker at once (so every worker takes one), echo 64 bytes on each, close them all, wait a
second, and measure again. PSS divides each shared page among the processes sharing it, so it
adds up across the tree (RSS would count the parent's code and libraries once per worker);
Private_Dirty is what one more worker really adds.

    python3 scripts/prefork-memory.py [--workers 2,16,256]

Writes results/DATE-prefork-memory/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import os
import socket
import time

from lablib import OP_ECHO, build_release, frame, read_reply, results_dir, start_server, write_table, write_tsv


def rollup(pid):
    """Pss, Rss and Private_Dirty of PID, in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            fields = line.split()
            if fields[0] in ("Rss:", "Pss:", "Private_Dirty:"):
                out[fields[0][:-1]] = int(fields[1])
    return out


def tree(proc):
    """(parent's rollup, [each worker's rollup])."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    return rollup(proc.pid), [rollup(w) for w in workers]


def summary(parent, workers):
    total = parent["Pss"] + sum(w["Pss"] for w in workers)
    dirty = sum(w["Private_Dirty"] for w in workers) / len(workers)
    return total, dirty, parent["Pss"]


def measure(n):
    proc, port = start_server("server-prefork", "--workers", str(n), "--accept", "shared")
    try:
        time.sleep(1.0)
        fresh = summary(*tree(proc))
        # Every worker takes one connection: all are open before any is used.
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        for i, s in enumerate(socks):
            s.sendall(frame(OP_ECHO, i + 1, 0, b"x" * 64))
            if read_reply(s)[0] != 0:
                raise SystemExit(f"{n} workers: bad reply")
        for s in socks:
            s.close()
        time.sleep(1.0)
        used = summary(*tree(proc))
        return fresh, used
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="2,16,256")
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    build_release()
    # Before measuring: it refuses a dirty tree, and notes the load the run starts from.
    path = results_dir("prefork-memory", args.results)
    rows, raw = [], ["workers\tphase\ttotal_pss_kib\tworker_private_dirty_kib\tparent_pss_kib"]
    for n in [int(x) for x in args.workers.split(",")]:
        fresh, used = measure(n)
        for phase, (total, dirty, parent) in (("fresh", fresh), ("used", used)):
            raw.append(f"{n}\t{phase}\t{total}\t{dirty:.0f}\t{parent}")
        rows.append(
            f"| {n} | {fresh[0] / 1024:.1f} MiB | {fresh[1]:.0f} KiB | "
            f"{used[0] / 1024:.1f} MiB | {used[1]:.0f} KiB | {fresh[2]} KiB |"
        )
    table = "\n".join(
        [
            "| workers | PSS, fresh | per worker (Private_Dirty) | PSS, each worker has served a connection | per worker | parent PSS |",
            "|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    write_tsv(path, "raw.tsv", raw)
    write_table(path, table)


if __name__ == "__main__":
    main()
