#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin new
for r in 1 2; do
 for m in hgrn rwkv4; do
  N=/tmp/frnn-bin/frnn-bench-old row old $m "X=1" --reps 20 --check none
  row new $m "X=1" --reps 20 --check none
 done
 N=/tmp/frnn-bin/frnn-bench-old row old s4d "X=1" --N 32 --reps 10 --check none
 row new s4d "X=1" --N 32 --reps 10 --check none
done
N=/tmp/frnn-bin/frnn-bench-old row old mamba "X=1" --N 16 --reps 5 --check none
row new mamba "X=1" --N 16 --reps 5 --check none
N=/tmp/frnn-bin/frnn-bench-old row old mlstm "X=1" --reps 5 --check none
row new mlstm "X=1" --reps 5 --check none
N=/tmp/frnn-bin/frnn-bench-old row old longhorn "X=1" --reps 3 --check none
row new longhorn "X=1" --reps 3 --check none
for m in hgrn rwkv4; do row check $m "X=1" --reps 5; done
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=hgrn,rwkv4 FRNN_BENCH_PHASES=time,check FRNN_BENCH_TOTAL=150 timeout 170 bash bench/run_device.sh > $OUT/cmp_run.log 2>&1
grep -E "time |check " $OUT/cmp/*.log 2>/dev/null | head -20 || tail -20 $OUT/cmp_run.log
