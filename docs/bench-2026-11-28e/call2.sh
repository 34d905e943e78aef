#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin new
for r in 1 2; do
 for m in hgrn rwkv4; do
  N=/tmp/frnn-bin/frnn-bench-old row head $m "X=1" --reps 20 --check none
  row v2 $m "X=1" --reps 20 --check none
  row v2minb2 $m "FRNN_BWD_ROLES_MINB=2" --reps 20 --check none
  row v2f64 $m "FRNN_PREFETCH_DEPTH=64," --reps 20 --check none
  row v4 $m "FRNN_ROWS_VEC=4" --reps 20 --check none
  row v4minb2 $m "FRNN_ROWS_VEC=4 FRNN_BWD_ROLES_MINB=2" --reps 20 --check none
  row v1 $m "FRNN_ROWS_VEC=1" --reps 20 --check none
 done
done
for m in hgrn rwkv4; do row check $m "X=1" --reps 5; done
