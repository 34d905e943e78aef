#!/usr/bin/env bash
# compute-sanitizer memcheck over the chunked kernels (builds nothing; carry
# devbin): frnn-bench at small sizes, T not a multiple of the chunk, each of
# $MODELS (default: the seven chunked examples) forward and backward.
set -u
. bench/device_setup.sh
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for m in ${MODELS:-delta_rule gated_delta_rule rwkv7 gla mamba2 rwkv6 gsa_values}; do
  FRNN_CACHE_DIR=/tmp/fc-mc timeout -k 5 120 $CS --tool memcheck --error-exitcode 9 /tmp/frnn-bin/frnn-bench \
    examples/$m.frnn --B 1 --T 100 --H 2 --reps 1 --warmup 0 --check none > /tmp/mc_$m.txt 2>&1
  rc=$?; echo "memcheck $m rc $rc: $(grep -c 'Invalid\|ERROR SUMMARY: [1-9]' /tmp/mc_$m.txt) error lines; $(grep 'ERROR SUMMARY' /tmp/mc_$m.txt | head -1)"
done
