# One device call for the low-rank chunked kernels (builds nothing; carry devbin):
# the GPU tests under the default plan, then frnn-bench on the chunked examples
# under each configuration in $CONFIGS (ENV=VALUE,... or "default"), then Nsight
# Compute's summary of the delta rule's chunked kernels.
set -u
. bench/device_setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ "${SKIP_TESTS:-0}" = 1 ] || bash bench/gpu_tests.sh /tmp/frnn-bin default
MODELS=${MODELS:-examples/delta_rule.frnn examples/gated_delta_rule.frnn examples/rwkv7.frnn examples/gla.frnn examples/mamba2.frnn examples/rwkv6.frnn}
n=0
for cfg in ${CONFIGS:-default}; do
  n=$((n+1))
  envs=$(echo "$cfg" | tr ',' ' '); [ "$cfg" = default ] && envs=""
  env $envs FRNN_CACHE_DIR=/tmp/fc-$n timeout -k 5 250 /tmp/frnn-bin/frnn-bench $MODELS --reps ${REPS:-10} --warmup 2 > $OUT/bench_$n.txt 2>&1
  echo "== $cfg (rc $?)"; grep -E "^[a-z_0-9]+ +[0-9]|rror" $OUT/bench_$n.txt | cut -c1-120
done
if [ -n "${NCU_MODEL:-}" ] && command -v ncu > /dev/null; then
  FRNN_CACHE_DIR=/tmp/fc-1 timeout -k 5 200 ncu --clock-control none --kernel-name regex:frnn_ck --launch-skip ${NCU_SKIP:-6} --launch-count 3 \
    --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \
    /tmp/frnn-bin/frnn-bench $NCU_MODEL --reps 1 --warmup 1 > $OUT/ncu.txt 2>&1
  echo "== ncu (rc $?)"; grep -E "frnn_ck_|Duration|Grid Size|Warp Cycles Per Issued|Registers Per|Issue Slots Busy|Memory Throughput" $OUT/ncu.txt | head -60
fi
# Where the time goes: FRNN_CK_SKIP leaves out one product site at a time
# (results wrong), fw and fw+bw ms of $SWEEP_MODEL against the full kernels.
if [ -n "${SWEEP_MODEL:-}" ]; then
  echo "== site sweep on $SWEEP_MODEL (fw, fw+bw ms)"
  for site in full ${SWEEP_SITES:-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20}; do
    mask=0; [ "$site" = full ] || mask=$((1 << site))
    FRNN_CK_SKIP=$mask FRNN_CACHE_DIR=/tmp/fc-sweep-$site timeout -k 5 60 /tmp/frnn-bin/frnn-bench $SWEEP_MODEL --reps 5 --warmup 1 --check none --json $OUT/sweep_$site.json > /dev/null 2>&1
    python3 -c "import json,sys; r=json.load(open('$OUT/sweep_$site.json'))['models'][0]; print('site $site', r['fw_ms']['median'], r['fwbw_ms']['median'])" 2>&1 | tail -1
  done
fi
