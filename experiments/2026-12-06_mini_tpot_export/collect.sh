#!/bin/bash
# The sweep's points (results, log tails) and frontier from ${1:-/tmp/sweep} to $OUT, then the sweep log's last lines.
S=${1:-/tmp/sweep}
for p in $S/points/*; do
  cp $p/results.json $OUT/results/$(basename $p).json 2>/dev/null
  tail -c 200000 $p/stdout.log > $OUT/results/$(basename $p).stdout.log 2>/dev/null
  tail -c 50000 $p/stderr.log > $OUT/results/$(basename $p).stderr.log 2>/dev/null
done
cp $S/frontier.csv $OUT/ 2>/dev/null; tail -5 $OUT/sweep.log
