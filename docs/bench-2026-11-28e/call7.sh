#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=hgrn,rwkv4 FRNN_BENCH_PHASES=time FRNN_BENCH_TOTAL=130 timeout 150 bash bench/run_device.sh > $OUT/cmp_run.log 2>&1
grep -hE "time " $OUT/cmp/*.log 2>/dev/null | head -5 || tail -5 $OUT/cmp_run.log
