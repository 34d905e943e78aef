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
configs="models_f32_odd models_f32_1x1 models_f32_48x96_strided models_f32_64 models_f32_128 models_bf16_128"
for c in $configs; do
  FRNN_GPU_CONFIG=$c FRNN_CACHE_DIR=/tmp/fc-$c FRNN_GPU_TABLE=/tmp/gpu_errors_$c.txt \
    timeout -k 5 200 /tmp/frnn-bin/test_gpu_models > /tmp/gpu_$c.log 2>&1 &
done
wait
for c in $configs; do echo "== $c"; cat /tmp/gpu_$c.log; done > "$OUT/gpu.log"
cat /tmp/gpu_errors_*.txt > "$OUT/gpu_errors.txt" 2>/dev/null
echo "== GPU tests ($(($(date +%s) - T0)) s):"; grep -hE "^[0-9]+%|:F:|:E:|signal" "$OUT/gpu.log" | cut -c1-200 | head -20
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
