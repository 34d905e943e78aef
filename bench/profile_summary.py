"""Summarise an Nsight Compute report exported as CSV (bench/profile_ck.sh):
per kernel the headline metrics of the details page, then from the SASS source
page where the warp-stall samples fall: by opcode, and the hottest windows of
64 instructions; from the raw page (optional third file) the pipes' use and
the stall reasons per issued instruction.
python3 profile_summary.py DETAILS.csv SASS.csv [RAW.csv]"""
import csv, sys, re
from collections import defaultdict

want = ["Duration", "Registers Per Thread", "Executed Instructions", "Issue Slots Busy", "Warp Cycles Per Issued Instruction",
        "Achieved Occupancy", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput", "Dynamic Shared Memory Per Block"]
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
if rows:
    h = rows[0]
    try:
        ki, mi, ui, vi, si = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Unit"), h.index("Metric Value"), h.index("ID")
        seen = defaultdict(dict)
        for r in rows[1:]:
            if len(r) > vi and (r[mi] in want or r[mi].startswith("Stall") or "stall" in r[mi].lower()):
                seen[(r[si], r[ki][:40])][r[mi]] = r[vi] + " " + r[ui]
        for k, d in seen.items():
            print("==", k)
            for m in want:
                if m in d: print("  %-40s %s" % (m, d[m]))
    except ValueError as e:
        print("details: no columns", e, h[:8])

lines = open(sys.argv[2], errors="replace").read().splitlines()
kernels, cur, header = [], None, None
for r in csv.reader(lines):
    if not r: continue
    if "Source" in r and ("Address" in r or "# Address" in r):
        header = r; cur = []; kernels.append(cur); continue
    if header and len(r) == len(header): cur.append(dict(zip(header, r)))
print("source page: %d kernel sections" % len(kernels))
def num(x):
    try: return float(x.replace(",", ""))
    except Exception: return 0.0
for n, ins in enumerate(kernels):
    if not ins: continue
    cols = list(ins[0].keys())
    scol = next((c for c in cols if c.startswith("Warp Stall Sampling (All")), None)
    ecol = next((c for c in cols if c.startswith("Instructions Executed")), None)
    if not scol:
        print("no sampling column:", cols[:12]); continue
    total = sum(num(i[scol]) for i in ins) or 1
    print("== section %d: %d instructions, %d samples, %.0f executed" % (n, len(ins), total, sum(num(i.get(ecol, "0")) for i in ins)))
    by = defaultdict(float); byx = defaultdict(float)
    for i in ins:
        src = re.sub(r"^@!?U?P\w+\s+", "", i["Source"].strip())
        op = src.split(" ")[0] if src else "?"
        by[op] += num(i[scol]); byx[op] += num(i.get(ecol, "0"))
    print("  opcode            stall%  executed")
    for op, v in sorted(by.items(), key=lambda x: -x[1])[:22]:
        print("  %-18s %5.1f  %10.0f" % (op, 100 * v / total, byx[op]))
    W = 64
    win = [sum(num(i[scol]) for i in ins[j:j + W]) for j in range(0, len(ins), W)]
    print("  hottest windows of %d instructions (start index: stall%%, top opcodes)" % W)
    for j in sorted(range(len(win)), key=lambda j: -win[j])[:12]:
        ops = defaultdict(float)
        for i in ins[j * W:(j + 1) * W]:
            ops[re.sub(r"^@!?U?P\w+\s+", "", i["Source"].strip()).split(" ")[0]] += num(i[scol])
        top = ", ".join("%s %.0f" % (o, 100 * v / total) for o, v in sorted(ops.items(), key=lambda x: -x[1])[:5])
        print("   %6d: %5.1f  %s" % (j * W, 100 * win[j] / total, top))

if len(sys.argv) > 3:
    raw = list(csv.reader(open(sys.argv[3], errors="replace")))
    if len(raw) > 2:
        h = raw[0]
        pat = re.compile(r"(sm__inst_executed_pipe_\w+|sm__pipe_\w+_cycles_active\w*pct\w*|smsp__average_warps_issue_stalled_\w+_per_issue_active\.ratio|sm__throughput\.avg\.pct\w*|gpu__time_duration\.sum)$")
        for r in raw[2:]:
            if len(r) != len(h): continue
            name = r[h.index("Kernel Name")][:30] if "Kernel Name" in h else "?"
            print("== raw:", name)
            vals = [(m, r[i]) for i, m in enumerate(h) if pat.search(m)]
            def f(x):
                try: return float(x.replace(",", ""))
                except Exception: return -1
            stalls = sorted([(f(v), m) for m, v in vals if "stalled" in m], reverse=True)[:10]
            print("  stalls/issue: " + ", ".join("%s %.2f" % (m.split("stalled_")[1].split("_per")[0], v) for v, m in stalls))
            pipes = sorted([(f(v), m) for m, v in vals if "pipe" in m and "pct" in m], reverse=True)[:12]
            print("  pipes %: " + ", ".join("%s %.1f" % (m.replace("sm__pipe_", "").replace("sm__inst_executed_pipe_", "")[:28], v) for v, m in pipes))
            for m, v in vals:
                if "duration" in m or "sm__throughput" in m: print("  %s %s" % (m, v))
