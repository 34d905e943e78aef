#!/usr/bin/env bash
# The one script to run on the GPU machine, from the repository root:
#
#   bash bench/run_device.sh
#
# Needs there: refs/ (bench/fetch_refs.sh; git-ignored, carried) and either
# devbin/bins.tar.xz (bench/device_pack.sh libfrnn.so frnn-bench; carried) or build/.
# Does, within FRNN_BENCH_TOTAL seconds (default 520, under the 9 minutes of one call):
#   1. unpacks devbin/bins.tar.xz into devbin/bin/ (libfrnn.so, frnn-bench)
#   2. frnn-bench --json $OUT/frnn_bench.json  (every example, default sizes; at most
#      FRNN_BENCH_FRNN_TIMEOUT s, default 150)
#   3. python3 bench/compare.py  (frnn vs the references; the rest of the time)
#   4. python3 bench/compare.py --report  (the table, last)
# Writes under $OUT (default bench/out): env.txt, frnn_bench.json/.txt, compare.log,
# results.json, fwbw_ratio.png.  Environment passed on to compare.py: see its docstring
# (FRNN_BENCH_MODELS, FRNN_BENCH_PHASES, FRNN_BENCH_CHUNK, ...).  FRNN_BENCH_ARGS: more
# frnn-bench options (e.g. "--reps 10 --warmup 2").  FRNN_BENCH_SKIP_FRNN_BENCH=1
# leaves step 2 out.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
TOTAL=${FRNN_BENCH_TOTAL:-520}
left() { echo $((TOTAL - ($(date +%s) - T0))); }
OUT=${OUT:-$ROOT/bench/out}
export OUT
mkdir -p "$OUT"

# 1. binaries
BIN=$ROOT/devbin/bin
if [ -f devbin/bins.tar.xz ]; then
  rm -rf "$BIN" && mkdir -p "$BIN"
  tar -xJf devbin/bins.tar.xz -C "$BIN" || echo "run_device: unpacking devbin/bins.tar.xz failed"
fi
if [ -z "${FRNN_LIB:-}" ]; then
  for c in "$BIN/libfrnn.so" "$(find "$BIN" -name 'libfrnn.so*' 2>/dev/null | head -n1)" "$ROOT/build/libfrnn.so"; do
    if [ -n "$c" ] && [ -f "$c" ]; then FRNN_LIB=$c; break; fi
  done
fi
BENCH=""
for c in "$BIN/frnn-bench" "$(find "$BIN" -name frnn-bench 2>/dev/null | head -n1)" "$ROOT/build/frnn-bench"; do
  if [ -n "$c" ] && [ -f "$c" ]; then chmod +x "$c" 2>/dev/null; BENCH=$c; break; fi
done
export FRNN_LIB=${FRNN_LIB:-$ROOT/build/libfrnn.so}
export FRNN_SOURCE_DIR=$ROOT
export PYTHONPATH=$ROOT/refs/fla:$ROOT/refs/mamba:$ROOT/refs/mlstm:$ROOT/bench${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FRNN_BENCH_NO_TABLE=1
export PYTHONDONTWRITEBYTECODE=1

{
  echo "date: $(date -u)"
  echo "FRNN_LIB=$FRNN_LIB"
  echo "frnn-bench: ${BENCH:-none}"
  [ -d refs ] && cat refs/COMMITS 2>/dev/null || echo "refs/ missing: run bench/fetch_refs.sh and carry refs"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,utilization.gpu --format=csv 2>&1
  nvidia-smi --query-compute-apps=pid,name,used_memory --format=csv 2>&1
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  python3 -c 'import triton; print("triton", triton.__version__)' 2>&1
  python3 -c 'import einops, packaging; print("einops", einops.__version__)' 2>&1
  python3 -c 'import matplotlib; print("matplotlib", matplotlib.__version__)' 2>&1 | tail -n1
} > "$OUT/env.txt" 2>&1
grep -E "^(NVIDIA|H100|name)|torch|triton|refs/ missing|Error" "$OUT/env.txt" | head -n 8

# 2. frnn-bench
if [ "${FRNN_BENCH_SKIP_FRNN_BENCH:-0}" != 1 ]; then
  if [ -n "$BENCH" ]; then
    TB=${FRNN_BENCH_FRNN_TIMEOUT:-150}
    t1=$(date +%s)
    timeout -k 5 "$TB" "$BENCH" --json "$OUT/frnn_bench.json" ${FRNN_BENCH_ARGS:-} > "$OUT/frnn_bench.txt" 2>&1
    rc=$?
    echo "== frnn-bench: rc $rc in $(($(date +%s) - t1)) s (124: stopped at ${TB} s); last lines of $OUT/frnn_bench.txt:"
    tail -n 22 "$OUT/frnn_bench.txt" | cut -c1-180
  else
    echo "== frnn-bench: not found (devbin/bins.tar.xz or build/frnn-bench)"
  fi
fi

# 3. compare.py
L=$(($(left) - 25))
if [ "$L" -gt 40 ]; then
  echo "== compare.py: ${L} s (log: $OUT/compare.log)"
  FRNN_BENCH_BUDGET=$((L - 15)) timeout -k 10 "$L" python3 bench/compare.py > "$OUT/compare.log" 2>&1
  rc=$?
  echo "compare.py rc $rc (124: stopped by timeout)"
  grep -E "^\[ *[0-9.]+s\] (time|check|first|phase|models)" "$OUT/compare.log" | cut -c1-150 | tail -n 20
  if [ "$rc" -ne 0 ]; then tail -n 12 "$OUT/compare.log" | cut -c1-200; fi
else
  echo "== compare.py: no time left (${L} s)"
fi

# 4. the table, last
timeout 60 python3 bench/compare.py --report "$OUT/results.json"
echo "== done in $(($(date +%s) - T0)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
