#!/usr/bin/env bash
# One device call for the chunked kernels (it builds nothing), from the
# repository root, carrying devbin (bash bench/device_pack.sh test_gpu_models
# frnn-bench libfrnn.so):
#   1. frnn-bench on every example (chunked kernels where a step has them)
#      -> bench_chunked.json/.txt, then the diagonal-class examples on the
#      recurrent kernels (FRNN_CHUNKED=0), same machine -> bench_recurrent.*;
#   2. the GPU tests (bench/gpu_tests.sh) under the default plan and the
#      chunked kernels' other paths: no decay split, two blocks a head (the
#      chain kernel, partials), the fused chain, products on CUDA cores
#      (FRNN_SKIP_GPU_TESTS=1: none); then compute-sanitizer memcheck on the
#      48 x 96 strided configuration (tensor cores, cp.async), where it is installed.
# CK_MODELS: the diagonal-class examples (default GLA, Mamba-2, RWKV-6, GSA values).
set -u
. "$(dirname "$0")/device_setup.sh"
MODELS=${CK_MODELS:-examples/gla.frnn examples/mamba2.frnn examples/rwkv6.frnn examples/gsa_values.frnn}
FRNN_CACHE_DIR=/tmp/fc-chunked timeout -k 5 240 /tmp/frnn-bin/frnn-bench --reps ${CK_REPS:-20} --warmup 3 \
  --json "$OUT/bench_chunked.json" > "$OUT/bench_chunked.txt" 2>&1
echo "== every example (rc $?)"; grep -vE "^$" "$OUT/bench_chunked.txt" | cut -c1-170
FRNN_CHUNKED=0 FRNN_CACHE_DIR=/tmp/fc-recurrent timeout -k 5 150 /tmp/frnn-bin/frnn-bench $MODELS \
  --reps ${CK_REPS:-20} --warmup 3 --json "$OUT/bench_recurrent.json" > "$OUT/bench_recurrent.txt" 2>&1
echo "== recurrent kernels (rc $?)"; grep -E "^[a-z_0-9]+ +[0-9]" "$OUT/bench_recurrent.txt" | cut -c1-170
if [ "${FRNN_SKIP_GPU_TESTS:-0}" != 1 ]; then
  bash bench/gpu_tests.sh /tmp/frnn-bin default
  bash bench/gpu_tests.sh /tmp/frnn-bin nosplit FRNN_CK_SPLIT_MAX=-1
  bash bench/gpu_tests.sh /tmp/frnn-bin bm64 FRNN_CK_BM=64
  bash bench/gpu_tests.sh /tmp/frnn-bin fused FRNN_CK_FUSE=1
  bash bench/gpu_tests.sh /tmp/frnn-bin cudacores FRNN_CK_MMA=0
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$CS" ]; then
    FRNN_GPU_CONFIG=models_f32_48x96_strided FRNN_CACHE_DIR=/tmp/fc-memcheck timeout -k 5 150 "$CS" --tool memcheck \
      /tmp/frnn-bin/test_gpu_models > "$OUT/memcheck.log" 2>&1
    echo "== memcheck (rc $?): $(grep -E "ERROR SUMMARY|^[0-9]+%" "$OUT/memcheck.log" | tr '\n' ' ')"
  fi
fi
