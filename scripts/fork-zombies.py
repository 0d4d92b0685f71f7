#!/usr/bin/env python3
"""Zombies left by server-fork's three --reap policies: the figures behind docs/models/fork.md.

A child that exits stays a zombie until its parent calls waitpid, and SIGCHLDs coalesce: one
signal can stand for many exits. `--reap loop` (the default) drains waitpid(WNOHANG) until
nothing is left; `--reap once` calls it once per signal (the classic bug); `--reap none` never
does (the book's fork server). For each policy, start server-fork (release build), make short
connections from concurrent clients (so that children exit close together and their signals
coalesce), wait a second, count the server's children in state Z in /proc, then stop it and
read its stats file (forked, reaped, refused, zombies_at_shutdown).

Two clients, each a row per policy:
- this script's own: CONNECTIONS connections from CLIENTS threads, each one binary echo and
  close, so connections = requests;
- redis-benchmark, if installed: `-t ping -n REQUESTS -c CLIENTS -k 0`. It opens more
  connections than it sends requests: first one to fetch the server's CONFIG (save,
  appendonly), then for each of its two tests (PING_INLINE, PING_MBULK) CLIENTS connections
  and one more each time a request completes, except the last; the CLIENTS-1 opened after
  the last request is sent send nothing. So 1 + 2 x (REQUESTS + CLIENTS - 1) connections
  (4099 for -n 2000 -c 50), each a child: the count the zombies are out of.
Every connection is a child until --max-children (default --max-connections, 4096) unreaped
children exist; past that the server answers "server busy" and forks nothing.

    python3 scripts/fork-zombies.py [--connections 4000] [--clients 50] [--requests 2000] [--max-children N] [--results DIR]

--max-children passes through to the server (a small one shows the cap in a short trial run).

Writes results/DATE-fork-zombies/ (table.md, raw.tsv, each run's *.stats.json, machine.txt).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from lablib import OP_ECHO, build_release, frame, read_reply, results_dir, start_server, write_table

POLICIES = ("loop", "once", "none")


def children(pid):
    """(children, zombies among them) of PID, from every /proc/N/stat's parent and state."""
    total = zombies = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone while we looked
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid:
            total += 1
            zombies += state == "Z"
    return total, zombies


def own_client(port, connections, clients):
    """CONNECTIONS short connections (one echo each) from CLIENTS threads; returns how many
    were answered with an error ("server busy": --max-children reached)."""
    refused = [0] * clients
    per = [connections // clients + (i < connections % clients) for i in range(clients)]

    def work(i):
        for j in range(per[i]):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(frame(OP_ECHO, j + 1, 0, b"short"))
                refused[i] += read_reply(s)[0] != 0

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(refused)


def redis_client(port, requests, clients):
    """redis-benchmark's exit status (it gives up on a connection that is refused)."""
    return subprocess.run(["redis-benchmark", "-p", str(port), "-t", "ping", "-n", str(requests),
                           "-c", str(clients), "-k", "0", "-q"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode


def run(policy, client, args, path):
    """One server, one client; the row's figures."""
    stats = os.path.join(path, f"{client}-{policy}.stats.json")
    cap = ["--max-children", str(args.max_children)] if args.max_children else []
    proc, port = start_server("server-fork", "--reap", policy, "--protocol", "auto", "--stats-file", stats, *cap)
    try:
        t = time.monotonic()
        if client == "own":
            refused_seen, status = own_client(port, args.connections, args.clients), 0
        else:
            refused_seen, status = None, redis_client(port, args.requests, args.clients)
        took = time.monotonic() - t
        time.sleep(1.0)  # the last children see their clients' EOF and exit
        kids, zombies = children(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    with open(stats) as f:
        report = json.load(f)
    extra, totals = report["extra"], report["totals"]
    return {
        "policy": policy, "client": client, "seconds": round(took, 2), "client_status": status,
        "accepted": totals["accepted"], "refused": totals["refused"], "refused_seen": refused_seen,
        "forked": extra["children_forked"], "reaped_while_running": extra["children_forked"] - kids,
        "children": kids, "zombies": zombies, "zombies_at_shutdown": extra["zombies_at_shutdown"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=4000, help="this script's client: connections (one echo each)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients, for both clients")
    ap.add_argument("--requests", type=int, default=2000, help="redis-benchmark -n (per test; -t ping runs two)")
    ap.add_argument("--max-children", type=int, help="server-fork --max-children (default: the server's, 4096)")
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    build_release()
    path = results_dir("fork-zombies", args.results)
    clients = ["own"] + (["redis-benchmark"] if shutil.which("redis-benchmark") else [])

    rows = [run(policy, client, args, path) for client in clients for policy in POLICIES]
    keys = list(rows[0])
    with open(os.path.join(path, "raw.tsv"), "w") as f:
        f.write("\t".join(keys) + "\n")
        for r in rows:
            f.write("\t".join(str(r[k]) for k in keys) + "\n")

    expected = 1 + 2 * (args.requests + args.clients - 1)
    lines = ["| client | --reap | connections accepted | children forked | refused (--max-children) | reaped while running | zombies after the clients left | the client |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        who = (f"own: {args.connections} connections x 1 echo, {args.clients} threads" if r["client"] == "own"
               else f"redis-benchmark -t ping -n {args.requests} -c {args.clients} -k 0")
        # redis-benchmark exits on the connection a refusal closes; ours counts the refusals.
        if r["client"] == "own":
            view = f"{r['refused_seen']} answered 'server busy'"
        else:
            view = "finished" if r["client_status"] == 0 else f"gave up (exit {r['client_status']})"
        lines.append(f"| {who} | {r['policy']} | {r['accepted']} | {r['forked']} | {r['refused']} | "
                     f"{r['reaped_while_running']} | {r['zombies']} | {view} |")
    lines += ["",
              f"server-fork (release build, --max-children {args.max_children or '4096 (the default)'}), one server per row; zombies: its children in "
              f"state Z in /proc one second after the last client left. redis-benchmark sends 2 x {args.requests} "
              f"requests but opens 1 + 2 x ({args.requests} + {args.clients} - 1) = {expected} connections (one for "
              f"CONFIG, and per test one per request plus {args.clients - 1} that send nothing). "
              f"{os.cpu_count()} CPUs; {datetime.date.today()}."]
    cap = f" --max-children {args.max_children}" if args.max_children else ""
    print(f"python3 scripts/fork-zombies.py --connections {args.connections} --clients {args.clients} --requests {args.requests}{cap}")
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
