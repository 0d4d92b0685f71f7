#!/usr/bin/env python3
"""A blocking handler in an event loop stalls every client: how much?

One client sends SLEEP 1 ms requests back to back (a handler that makes a blocking call);
another times ROUNDS echo round trips at the same time. Run against server-eventloop (each
backend) and server-thread, interleaved, REPEAT times; report the echo client's median and p99.
In the thread model the sleeper blocks only its own thread; in the event loop it blocks the
only thread there is, so the echo waits for the SLEEP in progress: about half of 1 ms on average.

    python3 scripts/blocking-handler.py [--rounds 2000] [--repeat 3]
Writes results/DATE-blocking-handler/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import datetime
import os
import socket
import statistics
import sys
import threading
import time

from lablib import OP_ECHO, OP_SLEEP, build_release, frame, read_reply, results_dir, start_server, write_table

SERVERS = {
    "eventloop (epoll)": ["server-eventloop", "--backend", "epoll"],
    "eventloop (poll)": ["server-eventloop", "--backend", "poll"],
    "thread-per-connection": ["server-thread"],
}


def measure(cmd, rounds, sleep_us):
    proc, port = start_server(*cmd)
    stop = threading.Event()

    def sleeper():
        s = socket.create_connection(("127.0.0.1", port))
        i = 0
        while not stop.is_set():
            i += 1
            s.sendall(frame(OP_SLEEP, i, sleep_us))
            read_reply(s)
        s.close()

    t = threading.Thread(target=sleeper)
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t.start()
        time.sleep(0.05)
        samples = []
        for i in range(rounds):
            start = time.perf_counter_ns()
            s.sendall(frame(OP_ECHO, i + 1, 0, b"x" * 16))
            read_reply(s)
            samples.append((time.perf_counter_ns() - start) / 1000.0)
            time.sleep(0.0002)  # pacing, so the echo client does not hog the GIL
        s.close()
    finally:
        stop.set()
        t.join(timeout=5)
        proc.terminate()
        proc.wait(timeout=10)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main():
    ap = argparse.ArgumentParser(description="echo latency next to a blocking SLEEP client")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sleep-us", type=int, default=1000)
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    build_release()
    results = results_dir("blocking-handler", args.results)
    raw = {}
    with open(os.path.join(results, "raw.tsv"), "w") as f:
        f.write("repetition\tserver\tmedian_us\tp99_us\n")
        for rep in range(1, args.repeat + 1):
            for name, cmd in SERVERS.items():
                med, p99 = measure(cmd, args.rounds, args.sleep_us)
                raw.setdefault(name, []).append((med, p99))
                f.write(f"{rep}\t{name}\t{med:.1f}\t{p99:.1f}\n")
            print(f"repetition {rep} of {args.repeat} done", file=sys.stderr)
    lines = ["| server | echo p50 (us) | echo p99 (us) |", "|---|---:|---:|"]
    for name in SERVERS:
        runs = raw[name]
        lines.append(f"| {name} | {statistics.median(r[0] for r in runs):.0f} | {statistics.median(r[1] for r in runs):.0f} |")
    lines.append("")
    lines.append(f"Echo round trips (Python client, {args.rounds} per run) while another client sends SLEEP "
                 f"{args.sleep_us} us back to back; median of {args.repeat} interleaved runs; "
                 f"{os.cpu_count()} CPUs; {datetime.date.today()}.")
    write_table(results, "\n".join(lines))


if __name__ == "__main__":
    main()
