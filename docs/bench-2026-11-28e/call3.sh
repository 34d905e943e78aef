#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin final
for r in 1 2; do
  N=/tmp/frnn-bin/frnn-bench-old row head hgrn "X=1" --reps 20 --check none
  row new hgrn "X=1" --reps 20 --check none
  row bwd32 hgrn "FRNN_PREFETCH_DEPTH=32,32" --reps 20 --check none
  row c64 hgrn "FRNN_BWD_C=64" --reps 20 --check none
  row minb1 hgrn "FRNN_BWD_ROLES_MINB=1" --reps 20 --check none
  N=/tmp/frnn-bin/frnn-bench-old row head rwkv4 "X=1" --reps 20 --check none
  row new rwkv4 "X=1" --reps 20 --check none
done
row check hgrn "X=1" --reps 5
for r in 1 2; do
  row s4d s4d "X=1" --N 32 --reps 10 --check none
  row s4d_c2_8 s4d "FRNN_BWD_C2=8" --N 32 --reps 10 --check none
  row s4d_c2_16 s4d "FRNN_BWD_C2=16" --N 32 --reps 10 --check none
  row s4d_pf8_8 s4d "FRNN_PREFETCH_DEPTH=8,8" --N 32 --reps 10 --check none
  row s4d_pf16_2 s4d "FRNN_PREFETCH_DEPTH=16,2" --N 32 --reps 10 --check none
  row s4d_smb1 s4d "FRNN_BWD_SMEM_BLOCKS=1" --N 32 --reps 10 --check none
  row s4d_smb3 s4d "FRNN_BWD_SMEM_BLOCKS=3" --N 32 --reps 10 --check none
  row s4d_lpr8 s4d "FRNN_LPR=8" --N 32 --reps 10 --check none
  row s4d_lpr2 s4d "FRNN_LPR=2" --N 32 --reps 10 --check none
done
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=hgrn FRNN_BENCH_PHASES=time,check FRNN_BENCH_TOTAL=80 timeout 100 bash bench/run_device.sh > $OUT/cmp_run.log 2>&1
grep -hE "time |check " $OUT/cmp/*.log 2>/dev/null | head -20 || tail -20 $OUT/cmp_run.log
