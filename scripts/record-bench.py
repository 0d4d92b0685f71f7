#!/usr/bin/env python3
"""What a record's structure and compression cost the codec alone: the criterion benchmark as a
committed run (issue 16, first slice; the end-to-end experiment through the servers is not
built yet).

Runs `cargo bench -p echolab-protocol --bench record`: for each format (positional, JSON,
protobuf, Avro) and record (the book's Person; with a nested address; 500 interests of
repetitive text; 500 of random letters), one exchange as a server sees it (client encode and
frame, server unframe, decode, increment, encode, frame, client unframe and decode), framed raw
and with snappy. Keeps criterion's median per benchmark and the framed request's size in bytes,
which the bench prints.

    python3 scripts/record-bench.py
Writes results/DATE-record-bench/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import os
import subprocess

from lablib import ROOT, criterion_median_ns, results_dir, write_table, write_tsv

FORMATS = ["positional", "protobuf", "avro", "json"]
RECORDS = ["book", "nested", "large-text", "large-random"]
GROUPS = ["record_roundtrip", "record_snappy"]


def ns(v):
    return f"{v:,.0f}".replace(",", " ") if v >= 1000 else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    # Compile first, so neither the build nor its load is part of the run.
    subprocess.run(["cargo", "bench", "-q", "-p", "echolab-protocol", "--bench", "record", "--no-run"],
                   cwd=ROOT, check=True)
    out = results_dir("record-bench", args.results)
    run = subprocess.run(["cargo", "bench", "-q", "-p", "echolab-protocol", "--bench", "record", "--", "--noplot"],
                         cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sizes = {}
    for line in run.stderr.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "size":
            sizes[(parts[3], parts[1], parts[2])] = int(parts[4])
    raw = ["group\tformat\trecord\tbytes\tmedian_ns"]
    lines = ["| record | format | bytes | bytes, snappy | ns per exchange | ns, snappy |",
             "|---|---|---:|---:|---:|---:|"]
    for record in RECORDS:
        for fmt in FORMATS:
            cells = []
            for group in GROUPS:
                t = criterion_median_ns(group, fmt, record)
                b = sizes[(group, fmt, record)]
                raw.append(f"{group}\t{fmt}\t{record}\t{b}\t{t:.1f}")
                cells.append((b, t))
            lines.append(f"| {record} | {fmt} | {cells[0][0]} | {cells[1][0]} | {ns(cells[0][1])} | {ns(cells[1][1])} |")
    lines += ["", "Bytes: the framed request (a flag byte and the record). Times: criterion medians, ns per exchange "
              "(client encode and frame, server unframe, decode, increment, encode, frame, client unframe and decode; "
              "release profile). `snappy` compresses every record at threshold 0, and a record it cannot shorten "
              "goes raw. Made by `python3 scripts/record-bench.py`."]
    write_tsv(out, "raw.tsv", raw)
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
