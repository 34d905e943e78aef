#!/usr/bin/env python3
"""Where a kernel's time goes, phase by phase: Nsight Compute's SASS source page
(bench/profile_ck.sh's sass.csv, `ncu --page source --csv --print-source sass`) cut at
every BAR.SYNC, each region with its share of the warp-stall samples, the instructions it
executed, its top stall reasons and its top opcodes by count executed.  The chunked
kernels' phases end at barriers, so a region is a phase (or a few).  Regions under 0.5%
of the samples are left out.

    python3 bench/sass_regions.py sass.csv
"""
import collections
import csv
import sys


def num(x):
    try:
        return int(x.replace(",", ""))
    except ValueError:
        return 0


def main(path):
    rows = list(csv.reader(open(path)))
    hdr, data = rows[1], rows[2:]
    si = hdr.index("Warp Stall Sampling (All Samples)")
    ei = hdr.index("Instructions Executed")
    reasons = [(h[6:], hdr.index(h)) for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    total = sum(num(r[si]) for r in data if len(r) > si) or 1
    start, samples, executed = 0, 0, 0
    stalls, ops = collections.Counter(), collections.Counter()
    for i, r in enumerate(data):
        if len(r) <= ei:
            continue
        src = r[1].split()
        op = (src[1] if src and src[0].startswith("@") and len(src) > 1 else src[0]) if src else ""
        samples += num(r[si])
        executed += num(r[ei])
        for name, j in reasons:
            stalls[name] += num(r[j])
        if num(r[ei]):
            ops[op.split(".")[0]] += num(r[ei])
        if op.startswith("BAR.SYNC") or i == len(data) - 1:
            if samples / total >= 0.005:
                print("%5d-%5d %5.1f%% exec=%6.1fM stalls: %s | ops: %s" % (
                    start, i, 100 * samples / total, executed / 1e6,
                    " ".join("%s:%.1f" % (k, 100 * v / total) for k, v in stalls.most_common(5)),
                    " ".join("%s:%.0f" % (k, v / 1e6) for k, v in ops.most_common(6))))
            start, samples, executed = i + 1, 0, 0
            stalls, ops = collections.Counter(), collections.Counter()


if __name__ == "__main__":
    main(sys.argv[1])
