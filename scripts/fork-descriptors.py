#!/usr/bin/env python3
"""Which descriptors server-fork's parent and a child hold, with one client connected: the table
in docs/models/fork.md ("What fork does to file descriptors").

fork copies every descriptor, and a socket or pipe closes only when its last descriptor goes,
so each side must close what belongs to the other. Start server-fork (release build), connect
one client and echo once (so its child is running and serving), then read /proc/PID/fd of the
parent and of the child: what each descriptor is (readlink), which end of a pipe
(/proc/PID/fdinfo's flags), and for a socket whether it is the listener or a connection
(its inode's state in /proc/net/tcp). Pipes are numbered in the order the parent's
descriptors name them; which pipe is the signal self-pipe and which the shutdown pipe is
servers/src/bin/server-fork.rs's order of creation (the self-pipe first), not something /proc
can say.

    python3 scripts/fork-descriptors.py [--results DIR]

Writes results/DATE-fork-descriptors/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import datetime
import os
import socket
import time

from lablib import OP_ECHO, build_release, frame, read_reply, results_dir, start_server, write_table, write_tsv


def socket_states():
    """{inode: 'listening' | 'connected' | state hex} from /proc/net/tcp and tcp6."""
    names = {"0A": "listening", "01": "connected"}
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    out[fields[9]] = names.get(fields[3], f"state {fields[3]}")
        except FileNotFoundError:
            pass
    return out


def descriptors(pid):
    """{fd: (readlink target, access mode)} of PID."""
    out = {}
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
        except OSError:
            continue
        out[int(fd)] = (target, ("read", "write", "read-write")[flags & 3])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    build_release()
    path = results_dir("fork-descriptors", args.results)

    proc, port = start_server("server-fork")
    try:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(frame(OP_ECHO, 1, 0, b"hello"))
        if read_reply(client)[0] != 0:
            raise SystemExit("bad reply")
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            kids = [int(p) for p in f.read().split()]
        if len(kids) != 1:
            raise SystemExit(f"expected one child, found {kids}")
        time.sleep(0.2)  # the child is back in poll, its descriptors settled
        parent, child = descriptors(proc.pid), descriptors(kids[0])
        states = socket_states()
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    pipes = {}  # pipe inode -> its number, in the order the parent's descriptors name them

    def what(fd, target, mode):
        if fd <= 2:  # given by whoever started the server, here this script
            return f"stdio: {'a pipe to this script' if target.startswith('pipe:') else target}"
        if target.startswith("pipe:"):
            n = pipes.setdefault(target, len(pipes) + 1)
            return f"pipe {n}, {mode} end"
        if target.startswith("socket:"):
            inode = target[len("socket:["):-1]
            return f"TCP socket, {states.get(inode, 'not in /proc/net/tcp')}"
        return target

    raw = ["fd\tparent\tchild\ttarget\tmode"]
    lines = ["| fd | parent | child | what |", "|---|---|---|---|"]
    for fd in sorted(set(parent) | set(child)):
        # Both hold it only if it is the same open file: the same target at the same number.
        target, mode = parent.get(fd) or child.get(fd)
        shared = fd in parent and fd in child and parent[fd][0] == child[fd][0]
        if fd in parent and fd in child and not shared:
            raise SystemExit(f"fd {fd} names different files in parent and child")
        raw.append(f"{fd}\t{int(fd in parent)}\t{int(fd in child)}\t{target}\t{mode}")
        lines.append(f"| {fd} | {'✓' if fd in parent else '—'} | {'✓' if fd in child else '—'} | {what(fd, target, mode)} |")
    lines += ["",
              f"server-fork (release build, default flags) started by this script (stdin inherited, stdout a pipe the "
              f"script reads the 'listening on' line from, stderr /dev/null), one client connected after one echo; "
              f"/proc/PID/fd, fdinfo and /proc/net/tcp of the parent and its one child. {datetime.date.today()}."]
    write_tsv(path, "raw.tsv", raw)
    print("python3 scripts/fork-descriptors.py")
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
