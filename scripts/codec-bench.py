#!/usr/bin/env python3
"""What a message's format costs the codec alone: the criterion benchmark as a committed run.

Runs `cargo bench -p echolab-protocol --bench codec` (no sockets, no kernel, no concurrency
model: one echo exchange through the servers' `Codec` trait object, and the server's parse
alone, for binary, RESP and JSON at 16 B, 1 KiB and 64 KiB) and keeps criterion's median per
benchmark, with the ratios docs/protocol.md quotes.

    python3 scripts/codec-bench.py
Writes results/DATE-codec-bench/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import os
import subprocess

from lablib import ROOT, criterion_median_ns, results_dir, write_table, write_tsv

PROTOCOLS = ["binary", "resp", "json"]
SIZES = [16, 1024, 65536]
GROUPS = [("echo_roundtrip", "round trip"), ("decode_request", "decode only")]


def fmt(ns):
    return f"{ns:,.0f}".replace(",", " ") if ns >= 1000 else f"{ns:.1f}"


def ratio(x):
    return f"{x:,.0f}×".replace(",", " ") if x >= 100 else (f"{x:.0f}×" if x >= 10 else f"{x:.1f}×")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    # Compile first, so neither the build nor its load is part of the run.
    subprocess.run(["cargo", "bench", "-q", "-p", "echolab-protocol", "--bench", "codec", "--no-run"],
                   cwd=ROOT, check=True)
    out = results_dir("codec-bench", args.results)
    subprocess.run(["cargo", "bench", "-q", "-p", "echolab-protocol", "--bench", "codec", "--", "--noplot"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    raw = ["group\tprotocol\tsize\tmedian_ns"]
    lines = ["| | binary | RESP | JSON | RESP / binary | JSON / binary |", "|---|---:|---:|---:|---:|---:|"]
    for group, label in GROUPS:
        for size in SIZES:
            ns = {p: criterion_median_ns(group, p, size) for p in PROTOCOLS}
            raw += [f"{group}\t{p}\t{size}\t{ns[p]:.2f}" for p in PROTOCOLS]
            name = {16: "16 B", 1024: "1 KiB", 65536: "64 KiB"}[size]
            lines.append(f"| {label}, {name} | {fmt(ns['binary'])} | {fmt(ns['resp'])} | {fmt(ns['json'])} | "
                         f"{ratio(ns['resp'] / ns['binary'])} | {ratio(ns['json'] / ns['binary'])} |")
    lines += ["", "criterion medians, ns per message (`cargo bench -p echolab-protocol --bench codec`, release "
              "profile); `round trip` is one whole echo exchange through the `Codec` trait object (client encode, "
              "server decode, server encode, client decode), `decode only` the server's parse. Made by "
              "`python3 scripts/codec-bench.py`."]
    write_tsv(out, "raw.tsv", raw)
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
