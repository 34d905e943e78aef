#!/usr/bin/env bash
# Many seeds of one GPU test configuration at once (builds nothing; carry devbin):
#   CONFIG=models_f32_128 RUNS=8 [SEED=N] [GREP=mamba2] bash bench/call_seeds.sh [ENV=VALUE ...]
# runs RUNS instances of tests/gpu/test_gpu_models side by side (each its own
# fresh seed, or SEED for all), then prints each run's verdict line and the
# largest errors of the models matching GREP (float32 rows), worst last.
set -u
: "${OUT:?OUT must name the output directory}"
mkdir -p /tmp/frnn-bin && tar -xJf devbin/bins.tar.xz -C /tmp/frnn-bin
export FRNN_SOURCE_DIR=${FRNN_SOURCE_DIR:-$PWD}
cfg=${CONFIG:-models_f32_128} runs=${RUNS:-8} tag=${TAG:-run}
for r in $(seq 1 "$runs"); do
  env "$@" ${SEED:+FRNN_TEST_SEED=$SEED} FRNN_GPU_CONFIG=$cfg FRNN_CACHE_DIR=/tmp/fcs-$tag-$r \
    FRNN_GPU_TABLE=/tmp/seeds_${tag}_$r.txt timeout -k 5 300 /tmp/frnn-bin/test_gpu_models > /tmp/seeds_${tag}_$r.log 2>&1 &
done
wait
for r in $(seq 1 "$runs"); do
  echo "$tag $r: $(grep -hoE 'seed: [0-9]+' /tmp/seeds_${tag}_$r.log | head -1) $(grep -hE '^[0-9]+%' /tmp/seeds_${tag}_$r.log)"
  grep -hE ':F:|:E:' /tmp/seeds_${tag}_$r.log | cut -c1-200 | head -3
done
cat /tmp/seeds_${tag}_*.txt > "$OUT/seeds_$tag.txt" 2>/dev/null
cat /tmp/seeds_${tag}_*.log > "$OUT/seeds_$tag.log" 2>/dev/null
echo "== $tag: largest float32 errors of ${GREP:-every model}"
grep -hE "${GREP:-.} " "$OUT/seeds_$tag.txt" | grep " f32 " | awk '{for (i = NF; i > 0; i--) if ($i ~ /^[0-9.]+e-[0-9]+$/) { print $i, $0; break }}' \
  | sort -g | tail -${TOP:-6} | cut -d' ' -f2- | cut -c1-110
