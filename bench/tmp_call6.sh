. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
row() { echo "$1 $2 $3 $($4 examples/$1.frnn "${@:5}" 2>&1 | grep -E "^ *$1 " | tr -s ' ' | cut -d' ' -f2,4,6,10,11)"; }
for m in gated_delta_rule delta_rule; do
  for sk in none 28 29 28,29 none 26,27; do
    mask=0; [ $sk = none ] || for b in ${sk//,/ }; do mask=$((mask | (1 << b))); done
    FRNN_CK_SKIP=$mask row $m new skip$sk $N
  done
done | tee "$OUT/bench.txt"
