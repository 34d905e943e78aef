#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for r in 1 2; do
 for m in hgrn rwkv4; do
  row default $m "X=1" --reps 20 --check none
  row pf32f $m "FRNN_PREFETCH_DEPTH=32," --reps 20 --check none
  row pf64f $m "FRNN_PREFETCH_DEPTH=64," --reps 20 --check none
  row c64 $m "FRNN_BWD_C=64" --reps 20 --check none
  row c64pf32 $m "FRNN_BWD_C=64 FRNN_PREFETCH_DEPTH=32,32" --reps 20 --check none
  row pf_b32 $m "FRNN_PREFETCH_DEPTH=16,32" --reps 20 --check none
  row pf_b4 $m "FRNN_PREFETCH_DEPTH=16,4" --reps 20 --check none
  row minb1 $m "FRNN_BWD_ROLES_MINB=1" --reps 20 --check none
 done
 row c96 hgrn "FRNN_BWD_C=96" --reps 20 --check none
 row c128 hgrn "FRNN_BWD_C=128" --reps 20 --check none
 row c64pf64 hgrn "FRNN_BWD_C=64 FRNN_PREFETCH_DEPTH=64,16" --reps 20 --check none
done
echo "== s4d"
for r in 1 2; do
 row default s4d "X=1" --N 32 --reps 10 --check none
 row pf16f s4d "FRNN_PREFETCH_DEPTH=16," --N 32 --reps 10 --check none
 row pfb8 s4d "FRNN_PREFETCH_DEPTH=8,8" --N 32 --reps 10 --check none
done
echo "== ncu hgrn bwd"
OUT=$OUT/ncu MODEL=examples/hgrn.frnn KERNELS=frnn_bwd LAUNCHES=1 timeout 200 bash bench/profile_ck.sh 2>&1 | tail -40
