#!/usr/bin/env bash
# One device call on RWKV-7's row decay phase (log_decay_gradient: 1.70 ms of its 8.15 fw+bw
# on the H100 in the twentieth session, calls 8-9): FRNN_CK_SKIP probes of its parts (results
# wrong where marked "!"), same binary, then GLA's.  Bits: 27 the phase, 28 its loads from
# shared memory instead of the seeds, 29 its stores, 31 its products in float32 (one
# conversion instead of two), 32 its split's exp factors.  Pack first:
#   XZ_OPT=-T2 bash bench/device_pack.sh test_gpu_models frnn-bench libfrnn.so
# and run with carry ["devbin"], kind nvidia-h100-x1.  Output: $OUT/probes.txt.
# The phase runs in the chain kernel by default since the twenty-first session
# (FRNN_CK_LD_CHAIN): the probes need it in the backward.
export FRNN_CK_LD_CHAIN=0
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { echo "$1 $2 $($N examples/$1.frnn 2>&1 | grep -E "^ *$1 " | tr -s ' ' | cut -d' ' -f2,4,6,10,11)"; }
for m in rwkv7 gla; do
  for bits in none 27 28 29 31 32 31,32 none; do
    mask=0
    [ "$bits" = none ] || for b in ${bits//,/ }; do mask=$((mask | (1 << b))); done
    FRNN_CK_SKIP=$mask row $m "skip=$bits"
  done
done | tee "$OUT/probes.txt"
