#!/usr/bin/env bash
# One device call for the chunked kernels (it builds nothing), from the
# repository root, carrying devbin (bash bench/device_pack.sh test_gpu_models
# frnn-bench libfrnn.so):
#   1. frnn-bench (with its reference check) on the diagonal-class examples,
#      chunked (default) and recurrent (FRNN_CHUNKED=0), same machine;
#   2. the GPU tests (bench/gpu_tests.sh) unless FRNN_SKIP_GPU_TESTS=1.
# CK_MODELS: the examples (default GLA, Mamba-2, RWKV-6, GSA values).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/out}
export OUT FRNN_SOURCE_DIR=$PWD
mkdir -p "$OUT" /tmp/frnn-bin
tar -xJf devbin/bins.tar.xz -C /tmp/frnn-bin
MODELS=${CK_MODELS:-examples/gla.frnn examples/mamba2.frnn examples/rwkv6.frnn examples/gsa_values.frnn}
for mode in chunked recurrent; do
  envs=""; [ $mode = recurrent ] && envs="FRNN_CHUNKED=0"
  env $envs FRNN_CACHE_DIR=/tmp/fc-$mode timeout -k 5 200 /tmp/frnn-bin/frnn-bench $MODELS \
    --reps ${CK_REPS:-10} --warmup 3 ${CK_BENCH_ARGS:-} --json "$OUT/bench_$mode.json" > "$OUT/bench_$mode.txt" 2>&1
  echo "== $mode (rc $?)"; grep -vE "^$" "$OUT/bench_$mode.txt" | cut -c1-160 | head -30
done
[ "${FRNN_SKIP_GPU_TESTS:-0}" = 1 ] || bash bench/gpu_tests.sh /tmp/frnn-bin default
