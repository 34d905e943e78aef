# One device call for the chunked kernels' tuning (builds nothing; carry devbin):
#   the GPU tests under each plan in $PLANS (LABEL:ENV=VALUE,...; default "default";
#   "none": no tests),
#   then frnn-bench on $MODELS (default: every example) under each configuration in
#   $CONFIGS (ENV=VALUE,... or "default"; runs 2.. take $MODELS2 if set),
#   then (SWEEP_MODEL) the time of each product site (FRNN_CK_SKIP one at a time).
set -u
. bench/device_setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for plan in ${PLANS:-default}; do
  [ "$plan" = none ] && continue
  label=${plan%%:*}; envs=""; [ "$plan" = "$label" ] || envs=$(echo "${plan#*:}" | tr ',' ' ')
  bash bench/gpu_tests.sh /tmp/frnn-bin $label $envs
done
n=0
for cfg in ${CONFIGS:-default}; do
  n=$((n+1))
  envs=$(echo "$cfg" | tr ',' ' '); [ "$cfg" = default ] && envs=""
  models=${MODELS:-}; [ $n -gt 1 ] && models=${MODELS2:-$models}
  env $envs FRNN_CACHE_DIR=/tmp/fc-$n timeout -k 5 250 /tmp/frnn-bin/frnn-bench $models --reps ${REPS:-10} --warmup 2 \
    --json $OUT/bench_$n.json > $OUT/bench_$n.txt 2>&1
  echo "== $cfg (rc $?)"; grep -E "^[a-z_0-9]+ +[0-9]|rror" $OUT/bench_$n.txt | cut -c1-150
done
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
