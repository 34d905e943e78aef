#!/usr/bin/env bash
# One device call for kernel work: GPU correctness (six test configurations in
# parallel), frnn-bench on a few models, then plan variants given as arguments
# ("ENV=VALUE[,ENV=VALUE]" each, "-" for the default plan) on FRNN_TUNE_MODELS.
# Carry devbin (bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/b; tar -xJf devbin/bins.tar.xz -C /tmp/b
export FRNN_SOURCE_DIR=$PWD
T0=$(date +%s)
# FRNN_TUNE_TEST_ENVS: plan settings to run the GPU tests under ("-": default;
# "" skips the tests), e.g. "- FRNN_BWD_CLUSTER=8".
for te in ${FRNN_TUNE_TEST_ENVS--}; do
  tenv=""; [ "$te" != "-" ] && tenv=$(echo "$te" | tr ',' ' ')
  OUT=$OUT bash bench/gpu_tests.sh /tmp/b "$te" $tenv
done
MODELS=${FRNN_TUNE_MODELS:-examples/delta_rule.frnn examples/gla.frnn examples/mamba2.frnn examples/rwkv7.frnn}
for v in "$@"; do
  envs=""; [ "$v" != "-" ] && envs=$(echo "$v" | tr ',' ' ')
  echo "== variant $v"
  env $envs FRNN_CACHE_DIR=/tmp/fc-tune timeout -k 5 ${FRNN_TUNE_TIMEOUT:-90} /tmp/b/frnn-bench $MODELS \
    --reps ${FRNN_TUNE_REPS:-10} --warmup 3 --check none 2>&1 | grep -vE "^sizes|^copy|^$"
done > "$OUT/variants.txt" 2>&1
cat "$OUT/variants.txt" | cut -c1-120
echo "total $(($(date +%s) - T0)) s"
