. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
mkdir -p /tmp/base && xz -dc devbin/base/frnn-bench.xz > /tmp/base/frnn-bench && chmod +x /tmp/base/frnn-bench
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
bash bench/gpu_tests.sh /tmp/frnn-bin default > "$OUT/gpu_summary.txt" 2>&1
tail -13 "$OUT/gpu_summary.txt"
row() { echo "$1 $2 $3 $($4 examples/$1.frnn "${@:5}" 2>&1 | grep -E "^ *$1 " | tr -s ' ' | cut -d' ' -f2,4,6,10,11)"; }
for r in 1 2; do
  for m in gated_delta_rule delta_rule; do
    row $m base8062263 - /tmp/base/frnn-bench
    row $m new - $N
  done
done | tee "$OUT/bench.txt"
for sk in 26 27 26,27; do
  mask=0; for b in ${sk//,/ }; do mask=$((mask | (1 << b))); done
  FRNN_CK_SKIP=$mask row gated_delta_rule new skip$sk $N
done | tee -a "$OUT/bench.txt"
FRNN_CK_SKIP=$((1 << 26)) row delta_rule new skip26 $N | tee -a "$OUT/bench.txt"
