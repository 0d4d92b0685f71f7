#!/usr/bin/env python3
"""Issue 17: does `loadgen merge` agree with an HdrHistogram implementation written elsewhere?

Reads interval logs with HdrHistogram_py (the `hdrhistogram` package on PyPI, module `hdrh`),
which shares no code with the Rust crate loadgen writes and merges them with, and checks:
- the segments' logs, unioned here (per-second histograms; the `step` ones left out), have
  exactly the count, min, max and percentiles of `loadgen merge`'s report (percentiles by the
  nearest-rank definition, walked over this library's buckets; see nearest_rank);
- the merged log `loadgen merge --hlog` wrote, read back here, holds the same histogram.

    python3 scripts/hlog_check.py MERGED.json MERGED.hlog SEGMENT.hlog...
Exit 0 when everything agrees, 1 (saying what differs) otherwise. scripts/multi-host-check.sh
runs it in a virtual environment with a pinned hdrhistogram.
"""
import json
import math
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

# loadgen's histograms: 1 µs to 60 s, 3 significant digits.
LOWEST, HIGHEST, DIGITS = 1, 60_000_000, 3
# As quantiles, written as loadgen's code writes them: 99.9 / 100 is 0.9990000000000001 in
# floating point, and ceil(q * N) would then pick the next sample when N is a multiple of 1000.
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999, "p9999": 0.9999}


def union(path, skip_tag=None):
    """Every interval histogram of the log at PATH added into one (those tagged SKIP_TAG
    left out), and how many intervals were read."""
    total = HdrHistogram(LOWEST, HIGHEST, DIGITS)
    reader = HistogramLogReader(path, HdrHistogram(LOWEST, HIGHEST, DIGITS))
    n = 0
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        if skip_tag is not None and h.get_tag() == skip_tag:
            continue
        total.add(h)
        n += 1
    return total, n


def nearest_rank(h, q):
    """The value at quantile Q by the nearest-rank definition, walked over HdrHistogram_py's
    recorded buckets here: the bucket holding sample ceil(Q * count) (at least the first), as
    its highest equivalent value. loadgen's crate defines its percentiles so;
    HdrHistogram_py's own get_value_at_percentile rounds the rank to the nearest instead, and
    can land one sample lower (printed beside, for comparison)."""
    rank = max(1, math.ceil(q * h.get_total_count()))
    for item in h.get_recorded_iterator():
        if item.total_count_to_this_value >= rank:
            return item.value_iterated_to
    return 0


def figures(h):
    # HdrHistogram_py does not carry the minimum through decode and add (it says 0): the
    # first recorded bucket is the minimum, exactly for values under 2048 at 3 digits.
    first = next(iter(h.get_recorded_iterator()), None)
    out = {
        "count": h.get_total_count(),
        "min": first.value_iterated_to if first else 0,
        "max": h.get_max_value(),
    }
    for name, p in PERCENTILES.items():
        out[name] = nearest_rank(h, p)
    return out


def same(a, b, name):
    """Equal, or the same HdrHistogram bucket (3 significant digits: within 1/1000)."""
    if a == b:
        return True
    return name not in ("count",) and abs(a - b) <= max(a, b) / 1000.0


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    merged_json, merged_hlog, segments = sys.argv[1], sys.argv[2], sys.argv[3:]
    report = json.load(open(merged_json))["latency_us"]
    total = HdrHistogram(LOWEST, HIGHEST, DIGITS)
    for path in segments:
        h, n = union(path, skip_tag="step")
        print(f"{path}: {n} intervals, {h.get_total_count()} latencies")
        total.add(h)
    ours = {k: report[k] for k in ["count", "min", "max", *PERCENTILES]}
    theirs = figures(total)
    back, n = union(merged_hlog)
    reread = figures(back)
    print(f"{merged_hlog}: {n} intervals, {back.get_total_count()} latencies")
    print(f"{'':8} {'loadgen merge':>14} {'hdrh, segments':>15} {'hdrh, merged log':>17} {'hdrh own percentile':>20}")
    bad = []
    for k in ours:
        own = total.get_value_at_percentile(100 * PERCENTILES[k]) if k in PERCENTILES else ""
        print(f"{k:8} {ours[k]:>14} {theirs[k]:>15} {reread[k]:>17} {own:>20}")
        if not (same(ours[k], theirs[k], k) and same(ours[k], reread[k], k)):
            bad.append(k)
    if bad:
        print(f"DISAGREE: {', '.join(bad)}")
        sys.exit(1)
    print("agree: loadgen merge's figures are HdrHistogram_py's, from the segments' logs and from the merged log")


if __name__ == "__main__":
    main()
