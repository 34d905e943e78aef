#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin s4dq
for r in 1 2; do
  N=/tmp/frnn-bin/frnn-bench-old row head s4d "X=1" --N 32 --reps 10 --check none
  row new s4d "X=1" --N 32 --reps 10 --check none
  row first4 s4d "FRNN_PREFETCH_FIRST=4" --N 32 --reps 10 --check none
  row first16 s4d "FRNN_PREFETCH_FIRST=16" --N 32 --reps 10 --check none
  row first32 s4d "FRNN_PREFETCH_FIRST=32" --N 32 --reps 10 --check none
  row new128 s4d "X=1" --N 128 --reps 5 --check none
  N=/tmp/frnn-bin/frnn-bench-old row head128 s4d "X=1" --N 128 --reps 5 --check none
done
row check s4d "X=1" --N 32 --reps 3
