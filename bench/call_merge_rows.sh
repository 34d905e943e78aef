#!/usr/bin/env bash
# One device call for FRNN_CK_MERGE=3 (b merged out of the chunked backward,
# built in the nineteenth session and not yet run on a GPU): the GPU tests of
# the chunked steps under it, then the rank-one steps timed at 3 against the
# default (2) in the same binary, with the float64 reference's check.  Pack
# first: bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so;
# run with carry ["devbin"].  Output: $OUT/bench.txt, $OUT/gpu_m3.txt.
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
configs="models_f32_odd models_f32_1x1 models_f32_48x96_strided models_f32_128 models_bf16_128 lean_backward"
for c in $configs; do
  FRNN_CK_MERGE=3 FRNN_GPU_CONFIG=$c FRNN_CACHE_DIR=/tmp/fc-$c FRNN_GPU_TABLE=/tmp/t_$c.txt \
    timeout -k 5 200 /tmp/frnn-bin/test_gpu_models > /tmp/g_$c.log 2>&1 &
done
wait
for c in $configs; do
  echo "$c: $(grep -hE "^[0-9]+%" /tmp/g_$c.log)"
  grep -hE ":F:|:E:" /tmp/g_$c.log | cut -c1-200 | head -5
done | tee "$OUT/gpu_m3.txt"
cat /tmp/t_*.txt > "$OUT/gpu_errors_m3.txt" 2>/dev/null
for m in delta_rule gated_delta_rule; do
  for mg in 3 2 3 2; do
    echo "$m merge$mg $(FRNN_CK_MERGE=$mg $N examples/$m.frnn --check B=1,T=100,H=2,M=128,N=128 2>&1 |
      grep -E "^ *$m " | tr -s ' ' | cut -d' ' -f2,4,6,10,11)"
  done
done | tee "$OUT/bench.txt"
