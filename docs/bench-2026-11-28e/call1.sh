#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin head
for m in delta_rule gated_delta_rule mamba2; do
  row default $m "X=1" --reps 10 --check none
  row ckpt2 $m "FRNN_CK_CKPT_EVERY=2" --reps 10 --check none
  row ckpt2w128 $m "FRNN_CK_CKPT_EVERY=2 FRNN_CK_WINDOW=128" --reps 10 --check none
  row win256 $m "FRNN_CK_WINDOW=256" --reps 10 --check none
  row lean $m "X=1" --lean --reps 10 --check none
done
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=s4d,hgrn FRNN_BENCH_PHASES=time FRNN_BENCH_TOTAL=120 timeout 140 bash bench/run_device.sh > $OUT/cmp_run.log 2>&1
grep -hE "time " $OUT/cmp/*.log 2>/dev/null | head -20 || tail -20 $OUT/cmp_run.log
