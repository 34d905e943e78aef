. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
mkdir -p /tmp/base && xz -dc devbin/base/frnn-bench.xz > /tmp/base/frnn-bench && chmod +x /tmp/base/frnn-bench
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
bash bench/gpu_tests.sh /tmp/frnn-bin default > "$OUT/gpu_summary.txt" 2>&1
tail -13 "$OUT/gpu_summary.txt"
row() { echo "$1 $2 $3 $($4 examples/$1.frnn "${@:5}" 2>&1 | grep -E "^ *$1 " | tr -s ' ' | cut -d' ' -f2,4,6,10,11)"; }
for r in 1 2; do
  for m in gated_delta_rule delta_rule mamba2 retention; do
    row $m base8062263 - /tmp/base/frnn-bench
    row $m new - $N
  done
done | tee "$OUT/bench.txt"
for m in gated_delta_rule delta_rule mamba2; do
  row $m new lean $N --lean
  row $m new check $N --check B=1,T=100,H=2,M=128,N=128
done | tee -a "$OUT/bench.txt"
