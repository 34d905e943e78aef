#!/usr/bin/env bash
# One device call: Nsight Compute on the chunked kernels of $MODEL (default the
# delta rule; $KERNELS: a regex of kernel names, default frnn_ck_(fwd|bwd)) at the
# benchmark sizes, builds nothing (carry devbin).  Writes
# $OUT/prof.ncu-rep, the details page, and the SASS source page with its
# per-instruction stall samples; bench/profile_summary.py prints where the
# samples fall (by opcode, and the hottest instructions with their neighbours).
set -u
. bench/device_setup.sh
MODEL=${MODEL:-examples/delta_rule.frnn}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
FRNN_CACHE_DIR=/tmp/fc-prof /tmp/frnn-bin/frnn-bench $MODEL --reps 1 --warmup 0 --check none > /dev/null 2>&1
FRNN_CACHE_DIR=/tmp/fc-prof timeout -k 5 400 $NCU --set full --import-source no -k regex:"${KERNELS:-frnn_ck_(fwd|bwd)}" \
  --launch-count ${LAUNCHES:-2} -f -o $OUT/prof /tmp/frnn-bin/frnn-bench $MODEL --reps 1 --warmup 0 --check none \
  > $OUT/ncu_run.txt 2>&1
echo "ncu rc $?"; tail -3 $OUT/ncu_run.txt
$NCU -i $OUT/prof.ncu-rep --page details --csv > $OUT/details.csv 2>&1
$NCU -i $OUT/prof.ncu-rep --page raw --csv > $OUT/raw.csv 2>&1
$NCU -i $OUT/prof.ncu-rep --page source --csv --print-source sass > $OUT/sass.csv 2>$OUT/sass.err || \
  $NCU -i $OUT/prof.ncu-rep --page source --csv > $OUT/sass.csv 2>>$OUT/sass.err
head -c 300 $OUT/sass.csv; echo; head -5 $OUT/sass.err
python3 bench/profile_summary.py $OUT/details.csv $OUT/sass.csv $OUT/raw.csv
# one file back (the device tool returns a few files only)
(cd $OUT && tar -czf prof_$(basename $MODEL .frnn).tgz prof.ncu-rep details.csv raw.csv sass.csv ncu_run.txt && \
  rm -f prof.ncu-rep details.csv raw.csv sass.csv sass.err ncu_run.txt)
