. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { local l=$1 m=$2 e=$3; shift 3; echo "$l $(env $e $N examples/$m.frnn "$@" 2>&1 | grep -E "^[a-z0-9_]+ +[0-9]" | tr -s ' ' | cut -d' ' -f1,2,4,6,10)"; }
for r in 1 2; do
  row div.full rwkv4 "" --reps 20 --check none
  row div.rn rwkv4 FRNN_DIV=0 --reps 20 --check none
done 2>&1 | tee "$OUT/bench.txt"
bash bench/gpu_tests.sh /tmp/frnn-bin default > "$OUT/gpu_summary.txt" 2>&1
tail -13 "$OUT/gpu_summary.txt"
for m in mlstm longhorn mamba; do
  row div.full $m "" --reps 10 --check none
  row div.rn $m FRNN_DIV=0 --reps 10 --check none
done 2>&1 | tee -a "$OUT/bench.txt"
row check rwkv4 "" --reps 3 --check B=1,T=100,H=2,M=128,N=128 | tee -a "$OUT/bench.txt"
OUT=$OUT/cmp FRNN_BENCH_GRAPH=1 FRNN_BENCH_SKIP_FRNN_BENCH=1 FRNN_BENCH_MODELS=rwkv4 FRNN_BENCH_PHASES=time,check FRNN_BENCH_TOTAL=60 timeout 70 bash bench/run_device.sh > "$OUT/cmp.log" 2>&1
grep -iE "^rwkv4 |check rwkv4" "$OUT/cmp.log" | tail -4
