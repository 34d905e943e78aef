. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
for k in FRNN_CK_STACK=0 FRNN_CK_MERGE=1; do
  bash bench/gpu_tests.sh /tmp/frnn-bin ${k//=/} $k 2>&1 | tail -14
done
for mg in 2 3; do
  echo "== gated merge$mg per kernel"
  FRNN_CK_MERGE=$mg ncu --clock-control none --csv --metrics gpu__time_duration.sum $N examples/gated_delta_rule.frnn --reps 2 --warmup 1 --check none > /tmp/ncu$mg.csv 2>/dev/null; python3 -c "
import csv,sys,collections
d=collections.defaultdict(list)
for r in csv.DictReader(l for l in open('/tmp/ncu$mg.csv') if l.startswith('\"')):
  d[r['Kernel Name'][:60]].append(float(r['Metric Value']))
for k,v in d.items(): print('%-60s n=%d med=%.1f' % (k,len(v),sorted(v)[len(v)//2]))
"
done
