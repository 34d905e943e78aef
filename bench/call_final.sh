#!/usr/bin/env bash
# The session's closing device call (builds nothing; carry devbin and refs):
# the GPU tests, frnn-bench on every example ($MODELS) and again on the chunked ones
# ($MODELS2) under $CONFIGS (baselines in the same call), then compare.py's time and check phases
# against the references for $CMP_MODELS, its table last.
set -u
T0=$(date +%s)
M7="examples/delta_rule.frnn examples/gated_delta_rule.frnn examples/rwkv7.frnn examples/gla.frnn examples/mamba2.frnn examples/rwkv6.frnn examples/gsa_values.frnn"
PLANS=${PLANS:-default} CONFIGS=${CONFIGS:-"default FRNN_CK_MMA_UNROLL=4 FRNN_CHUNKED=0"} MODELS=${MODELS:-} MODELS2=${MODELS2:-$M7} \
  REPS=${REPS:-10} bash bench/call_lowrank.sh
echo "== compare.py from $(( $(date +%s) - T0 )) s"
FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=${CMP_MODELS:-delta_rule,gated_delta_rule,rwkv7,mamba2,gla} \
  FRNN_BENCH_PHASES=time,check FRNN_BENCH_TOTAL=${CMP_TOTAL:-230} bash bench/run_device.sh > $OUT/run_device.txt 2>&1
tail -40 $OUT/run_device.txt
# one file back (the device tool returns a few files only)
(cd $OUT && tar -czf /tmp/final.tgz . && find . -mindepth 1 -delete && mv /tmp/final.tgz .)
echo "== done in $(( $(date +%s) - T0 )) s"
