#!/usr/bin/env bash
# The whole device call, from the repository root (it builds nothing):
#   1. GPU correctness: tests/gpu/test_gpu_models in its six configurations,
#      in parallel (the float64 reference is the slow part)      -> gpu.log, gpu_errors.txt
#   2. tuning variants of the plan on three models (FRNN_LPR, FRNN_MATH)  -> appended to gpu.log
#   3. bench/run_device.sh: frnn-bench on every example + compare.py against the
#      reference libraries (frnn_bench.json/.txt, compare.log, results.json, fwbw_ratio.png)
# Carry: devbin (bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so) and refs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/out}
export OUT FRNN_SOURCE_DIR=$PWD
mkdir -p "$OUT" /tmp/frnn-bin
tar -xJf devbin/bins.tar.xz -C /tmp/frnn-bin
T0=$(date +%s)
bash bench/gpu_tests.sh /tmp/frnn-bin default
[ "${FRNN_BENCH_VARIANTS:-1}" = 1 ] && {
  for v in "FRNN_LPR=32" "FRNN_LPR=16" "FRNN_LPR=8" "FRNN_MATH=accurate"; do
    echo "== variant $v"
    env $v FRNN_CACHE_DIR=/tmp/fc-variants timeout -k 5 60 /tmp/frnn-bin/frnn-bench \
      examples/delta_rule.frnn examples/gla.frnn examples/mamba2.frnn --reps 10 --warmup 3 --check none 2>&1 | tail -n 8
  done
} >> "$OUT/gpu.log" 2>&1
echo "== variants ($(($(date +%s) - T0)) s):"; grep -E "^== variant|delta_rule|gla |mamba2" "$OUT/gpu.log" | tail -n 16 | cut -c1-160
LEFT=$((${FRNN_DEVICE_TOTAL:-560} - ($(date +%s) - T0)))
FRNN_BENCH_TOTAL=$LEFT bash bench/run_device.sh
