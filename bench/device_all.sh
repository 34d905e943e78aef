#!/usr/bin/env bash
# The whole device call, from the repository root (it builds nothing):
#   1. GPU correctness: tests/gpu/test_gpu_models in its seven configurations,
#      in parallel, under FRNN_TEST_ENV (default: none, the default plan) -> gpu.log, gpu_errors.txt
#   2. plan variants (FRNN_VARIANTS, space-separated ENV=V[,ENV=V]; "-": default plan)
#      on FRNN_VARIANT_MODELS (default delta rule, GLA, Mamba-2)           -> variants.txt
#   3. bench/run_device.sh: frnn-bench on every example + compare.py against the
#      reference libraries (frnn_bench.json/.txt, compare.log, results.json, fwbw_ratio.png)
#      within what is left of FRNN_DEVICE_TOTAL s (default 560)
# Carry: devbin (bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so) and refs.
set -u
. "$(dirname "$0")/device_setup.sh"
T0=$(date +%s)
tenv=${FRNN_TEST_ENV:-}
bash bench/gpu_tests.sh /tmp/frnn-bin "${tenv:-default}" $(echo "$tenv" | tr ',' ' ')
MODELS=${FRNN_VARIANT_MODELS:-examples/delta_rule.frnn examples/gla.frnn examples/mamba2.frnn}
for v in ${FRNN_VARIANTS:-FRNN_LPR=32 FRNN_LPR=16 FRNN_LPR=8 FRNN_MATH=accurate}; do
  envs=""; [ "$v" != "-" ] && envs=$(echo "$v" | tr ',' ' ')
  echo "== variant $v"
  env $envs FRNN_CACHE_DIR=/tmp/fc-variants timeout -k 5 90 /tmp/frnn-bin/frnn-bench $MODELS \
    --reps 10 --warmup 3 --check none 2>&1 | grep -vE "^sizes|^copy|^float32|^$|^plan"
done > "$OUT/variants.txt" 2>&1
echo "== variants ($(($(date +%s) - T0)) s):"; cut -c1-110 "$OUT/variants.txt"
LEFT=$((${FRNN_DEVICE_TOTAL:-560} - ($(date +%s) - T0)))
FRNN_BENCH_TOTAL=$LEFT bash bench/run_device.sh
