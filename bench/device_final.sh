#!/usr/bin/env bash
# The session's benchmark call: GPU tests under the default plan and with
# clusters, plan variants on four models (device_tune.sh), then frnn-bench on
# every example and compare.py (run_device.sh), within FRNN_DEVICE_TOTAL s.
# Carry devbin (device_pack.sh test_gpu_models frnn-bench libfrnn.so) and refs.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
OUT=${OUT:-$PWD/bench/out}; mkdir -p "$OUT"
OUT=/tmp/tune FRNN_TUNE_TEST_ENVS=${FRNN_TUNE_TEST_ENVS:-"- FRNN_BWD_CLUSTER=8"} \
  bash bench/device_tune.sh "$@" > /tmp/tune.log 2>&1
cp /tmp/tune.log /tmp/tune/ 2>/dev/null; tar czf "$OUT/tune.tgz" -C /tmp tune
grep -E "^==|Checks|^delta|^gla|^mamba2|^rwkv7|FAILED|error" /tmp/tune.log | cut -c1-100
LEFT=$((${FRNN_DEVICE_TOTAL:-470} - ($(date +%s) - T0)))
OUT=$OUT FRNN_BENCH_TOTAL=$LEFT bash bench/run_device.sh
