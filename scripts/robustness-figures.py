#!/usr/bin/env python3
"""Two of the robustness figures (docs/robustness.md): what a greedy or an excess client costs
the others, measured with loadgen. Neither is a pass/fail test: latency belongs in benchmarks.

1. Head-of-line blocking in the event loop. 50 clients ping (16-byte echoes, closed loop)
   while one client streams ~1 MiB echoes, two in flight. How much later do the pingers'
   replies come? Without a per-turn write budget (`--write-budget 0`) a loop turn writes a
   whole 1 MiB reply before it looks at anyone else; with the default (64 KiB per connection
   per turn, as Redis does) the pingers wait for at most one such slice.
2. The connection cap. 50 clients are served by a server-thread with `--max-connections 50`
   while 20 more keep connecting (one request per connection): each of those gets "server
   busy" and is closed. Do the 50 notice?

Each figure is the median of --repeat runs, conditions interleaved; the server on CPU 0 and
the clients on CPU 1.

    python3 scripts/robustness-figures.py --repeat 5 --seconds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lablib  # noqa: E402

LOADGEN = os.path.join(lablib.ROOT, "target", "release", "loadgen")
SERVER_CPUS, CLIENT_CPUS = {0}, {1}


def start_loadgen(port, seconds, *extra):
    """A loadgen run in the background; returns (process, json path)."""
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [LOADGEN, "run", "--addr", f"127.0.0.1:{port}", "-d", f"{seconds}s", "--warmup", "500ms",
           "--progress", "never", "--json", out, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lablib.client_affinity(CLIENT_CPUS))
    return proc, out


def finish(proc, path, timeout):
    proc.wait(timeout=timeout)
    with open(path) as f:
        report = json.load(f)
    os.unlink(path)
    return report


def measure(binary, server_args, pingers, seconds, greedy=None, greedy_first=True):
    """The pingers' report (and the greedy client's, if any) against a fresh server. The
    greedy client starts first (and outlasts the measured window), or, for the connection cap,
    0.3 s after the pingers, so that they hold the 50 slots and only the excess is refused."""
    server, port = lablib.start_server(binary, *server_args)
    lablib.pin_all_threads(server.pid, SERVER_CPUS)
    try:
        other = None
        if greedy and greedy_first:
            other = start_loadgen(port, seconds + 1, *greedy)
        ping = start_loadgen(port, seconds, *pingers)
        if greedy and not greedy_first:
            time.sleep(0.3)
            other = start_loadgen(port, seconds, *greedy)
        result = finish(*ping, timeout=seconds + 30)
        greedy_report = finish(*other, timeout=seconds + 30) if other else None
        return result, greedy_report
    finally:
        server.terminate()
        server.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--results", help="results directory (default results/DATE-robustness-figures)")
    args = ap.parse_args()
    lablib.build_release("echolab-servers", "echolab-loadgen")
    out = lablib.results_dir("robustness-figures", args.results)
    s = args.seconds

    pingers = ["-c", "50", "--payload", "16"]
    streamer = ["-c", "1", "--payload", "1000000", "-p", "2"]
    hol = {
        "50 pingers alone": (["--backend", "epoll"], None),
        "+ 1 MiB streamer, --write-budget 0": (["--backend", "epoll", "--write-budget", "0"], streamer),
        "+ 1 MiB streamer, --write-budget 64K (default)": (["--backend", "epoll"], streamer),
    }
    knockers = ["-c", "20", "--requests-per-conn", "1", "--payload", "16", "--timeout", "1s"]
    cap = {
        "50 clients, --max-connections 50": (["--max-connections", "50"], None),
        "+ 20 more connecting all the time, each refused": (["--max-connections", "50"], knockers),
    }
    rows = {name: [] for name in list(hol) + list(cap)}
    for rep in range(args.repeat):
        for name, (server_args, greedy) in hol.items():
            rows[name].append(measure("server-eventloop", server_args, pingers, s, greedy))
        for name, (server_args, greedy) in cap.items():
            rows[name].append(measure("server-thread", server_args, ["-c", "50", "--payload", "16"], s, greedy,
                                      greedy_first=False))
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    def med(name, f):
        return statistics.median(f(r) for r in rows[name])

    lines = [f"Medians of {args.repeat} interleaved runs of {s:g} s (after 0.5 s warmup); server on CPU 0, "
             "clients on CPU 1. `python3 scripts/robustness-figures.py --repeat "
             f"{args.repeat} --seconds {s:g}`", "",
             "### Head-of-line blocking in the event loop (server-eventloop --backend epoll)", "",
             "| condition | pingers' req/s | p50 µs | p99 µs | p99.9 µs | max µs | p99 / alone | streamer MB/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    alone = med("50 pingers alone", lambda r: r[0]["latency_us"]["p99"])
    for name in hol:
        p99 = med(name, lambda r: r[0]["latency_us"]["p99"])
        mbs = "–" if hol[name][1] is None else f"{med(name, lambda r: r[1]['throughput_rps']):.0f}"
        lines.append(f"| {name} | {med(name, lambda r: r[0]['throughput_rps']):.0f} | "
                     f"{med(name, lambda r: r[0]['latency_us']['p50']):.0f} | {p99:.0f} | "
                     f"{med(name, lambda r: r[0]['latency_us']['p999']):.0f} | "
                     f"{med(name, lambda r: r[0]['latency_us']['max']):.0f} | {p99 / alone:.2f} | {mbs} |")
    lines += ["", "### The connection cap (server-thread --max-connections 50)", "",
              "| condition | served clients' req/s | p50 µs | p99 µs | p99 / alone | served clients' errors | "
              "excess attempts refused (busy) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    alone = med("50 clients, --max-connections 50", lambda r: r[0]["latency_us"]["p99"])
    for name in cap:
        p99 = med(name, lambda r: r[0]["latency_us"]["p99"])
        busy = "–" if cap[name][1] is None else f"{med(name, lambda r: r[1]['errors']['error_reply']):.0f}"
        lines.append(f"| {name} | {med(name, lambda r: r[0]['throughput_rps']):.0f} | "
                     f"{med(name, lambda r: r[0]['latency_us']['p50']):.0f} | {p99:.0f} | {p99 / alone:.2f} | "
                     f"{med(name, lambda r: sum(r[0]['errors'].values())):.0f} | {busy} |")
    lablib.write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
