set -u
. bench/device_setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash bench/gpu_tests.sh /tmp/frnn-bin default
LR="examples/delta_rule.frnn examples/gated_delta_rule.frnn examples/rwkv7.frnn"
for cfg in "default" "FRNN_CK_BM=64" "FRNN_CHUNKED=0"; do
  env $( [ "$cfg" = default ] || echo $cfg ) FRNN_CACHE_DIR=/tmp/fc-$cfg timeout -k 5 200 /tmp/frnn-bin/frnn-bench $LR --reps 10 --warmup 2 > $OUT/bench_$cfg.txt 2>&1
  echo "== $cfg rc $?"; grep -E "^[a-z_0-9]+ +[0-9]|rror" $OUT/bench_$cfg.txt | cut -c1-170
done
