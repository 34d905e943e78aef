#!/usr/bin/env bash
# Device check of the GPU half (issue 3): driver-layer tests, frnn-run --compare on four
# models in f32 and bf16, the six GPU test configurations, and a short frnn-bench.
# Carry devbin (bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so frnn-run test_cuda_runtime).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p /tmp/b; tar -xJf devbin/bins.tar.xz -C /tmp/b
export FRNN_SOURCE_DIR=$PWD
T0=$(date +%s)
FRNN_CACHE_DIR=/tmp/fc-rt timeout 100 /tmp/b/test_cuda_runtime > $OUT/rt.log 2>&1; echo "cuda_runtime rc $?"; tail -3 $OUT/rt.log
for s in 11 12; do for m in gla delta_rule rwkv7 mlstm; do
  d=f32; [ $s = 12 ] && d=bf16
  timeout 60 /tmp/b/frnn-run examples/$m.frnn --random B=2,T=37,H=3,M=24,N=40 --random-grad --dtype $d --seed $s --compare --out /tmp/fr_${m}_${s} > /tmp/fr.log 2>&1; echo "frnn-run $m $d rc $?"; tail -n 4 /tmp/fr.log
done; done > $OUT/frnn_run.log 2>&1
grep -c "rc 0" $OUT/frnn_run.log; grep "rc" $OUT/frnn_run.log
OUT=$OUT bash bench/gpu_tests.sh /tmp/b default
FRNN_CACHE_DIR=/tmp/fc-b timeout 120 /tmp/b/frnn-bench examples/delta_rule.frnn examples/gla.frnn examples/mamba2.frnn examples/rwkv7.frnn --check none > $OUT/bench.txt 2>&1; tail -8 $OUT/bench.txt
echo "total $(($(date +%s) - T0)) s"
