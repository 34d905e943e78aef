. "$(dirname "$0")/device_setup.sh"
N=/tmp/frnn-bin/frnn-bench
for m in gated_delta_rule delta_rule; do for mg in 2 3; do
  echo "== $m merge$mg per kernel (ns)"
  FRNN_CK_MERGE=$mg ncu --clock-control none --csv --metrics gpu__time_duration.sum $N examples/$m.frnn --reps 2 --warmup 1 --check none > /tmp/ncu$mg.csv 2>/dev/null; python3 -c "
import csv,sys,collections
d=collections.defaultdict(list)
for r in csv.DictReader(l for l in open('/tmp/ncu$mg.csv') if l.startswith('\"')):
  d[r['Kernel Name'][:60]].append(float(r['Metric Value'].replace(',','')))
for k,v in d.items(): print('%-60s n=%d med=%.0f' % (k,len(v),sorted(v)[len(v)//2]))
"
done; done
