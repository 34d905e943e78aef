#!/bin/bash
. "$(dirname "$0")/device_setup.sh"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
B=/tmp/frnn-bin/frnn-bench
FRNN_CACHE_DIR=/tmp/fc-prof $B examples/s4d.frnn --N 32 --reps 1 --warmup 0 --check none > /dev/null 2>&1
FRNN_CACHE_DIR=/tmp/fc-prof timeout -k 5 300 $NCU --set full --import-source no -k regex:"frnn_bwd" --launch-count 1 -f -o $OUT/prof $B examples/s4d.frnn --N 32 --reps 1 --warmup 0 --check none > $OUT/ncu_run.txt 2>&1
echo "ncu rc $?"; tail -2 $OUT/ncu_run.txt
$NCU -i $OUT/prof.ncu-rep --page details --csv > $OUT/details.csv 2>&1
$NCU -i $OUT/prof.ncu-rep --page raw --csv > $OUT/raw.csv 2>&1
$NCU -i $OUT/prof.ncu-rep --page source --csv --print-source sass > $OUT/sass.csv 2>$OUT/sass.err
python3 bench/profile_summary.py $OUT/details.csv $OUT/sass.csv $OUT/raw.csv > $OUT/summary.txt 2>&1; head -40 $OUT/summary.txt
(cd $OUT && tar -czf prof_s4d.tgz details.csv raw.csv sass.csv && rm -f prof.ncu-rep details.csv raw.csv sass.csv)
