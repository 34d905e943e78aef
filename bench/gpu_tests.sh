#!/usr/bin/env bash
# The GPU tests as a device call runs them: tests/gpu/test_gpu_models in its
# configurations in parallel, under the environment given, appending the
# logs to $OUT/gpu.log and the error table to $OUT/gpu_errors.txt, then a
# summary line per configuration.  From the repository root:
#   bash bench/gpu_tests.sh BIN_DIR LABEL [ENV=VALUE ...]
set -u
bin=$1 label=$2
shift 2
: "${OUT:?OUT must name the output directory}"
export FRNN_SOURCE_DIR=${FRNN_SOURCE_DIR:-$PWD}
T0=$(date +%s)
configs="models_f32_odd models_f32_1x1 models_f32_48x96_strided models_f32_64 models_f32_128 models_bf16_128 models_one_context guarded_retention column_decays wide_states lean_backward predicated_stores two_roles absent_output_gradients adjacent_rows"
rm -f /tmp/gpu_errors_*.txt
for c in $configs; do
  env "$@" FRNN_GPU_CONFIG=$c FRNN_CACHE_DIR=/tmp/fc-$c-$label FRNN_GPU_TABLE=/tmp/gpu_errors_$c.txt \
    timeout -k 5 240 "$bin/test_gpu_models" > /tmp/gpu_$c.log 2>&1 &
done
wait
for c in $configs; do echo "== $c ($label)"; cat /tmp/gpu_$c.log; done >> "$OUT/gpu.log"
cat /tmp/gpu_errors_*.txt >> "$OUT/gpu_errors.txt" 2>/dev/null
echo "== GPU tests, plan $label ($(($(date +%s) - T0)) s):"
grep -hE "^[0-9]+%|:F:|:E:|signal|Assert" /tmp/gpu_*.log | cut -c1-240 | head -24
