#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
O=/tmp/frnn-bin/frnn-bench-old
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin fixed
for r in 1 2; do
  N=$O row head s4d "X=1" --N 32 --reps 10 --check none
  row new s4d "X=1" --N 32 --reps 10 --check none
  row first4 s4d "FRNN_PREFETCH_FIRST=4" --N 32 --reps 10 --check none
  row first16 s4d "FRNN_PREFETCH_FIRST=16" --N 32 --reps 10 --check none
  N=$O row head128 s4d "X=1" --N 128 --reps 5 --check none
  row new128 s4d "X=1" --N 128 --reps 5 --check none
  N=$O row head mamba "X=1" --N 16 --reps 5 --check none
  row new mamba "X=1" --N 16 --reps 5 --check none
  N=$O row head rwkv4 "X=1" --reps 20 --check none
  row new rwkv4 "X=1" --reps 20 --check none
done
N=$O row head longhorn "X=1" --reps 3 --check none
row new longhorn "X=1" --reps 3 --check none
row check s4d "X=1" --N 32 --reps 3
row check rwkv4 "X=1" --reps 3
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=s4d FRNN_BENCH_PHASES=time FRNN_BENCH_TOTAL=100 timeout 120 bash bench/run_device.sh > $OUT/cmp_run.log 2>&1
grep -hE "time " $OUT/cmp/*.log 2>/dev/null | head -5 || tail -5 $OUT/cmp_run.log
