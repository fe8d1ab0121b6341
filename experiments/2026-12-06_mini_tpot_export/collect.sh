#!/bin/bash
# The sweep's points (results, log tails) and frontier from /tmp/sweep to $OUT, then the sweep log's last lines.
for p in /tmp/sweep/points/*; do
  cp $p/results.json $OUT/results/$(basename $p).json 2>/dev/null
  tail -c 200000 $p/stdout.log > $OUT/results/$(basename $p).stdout.log 2>/dev/null
  tail -c 50000 $p/stderr.log > $OUT/results/$(basename $p).stderr.log 2>/dev/null
done
cp /tmp/sweep/frontier.csv $OUT/ 2>/dev/null; tail -5 $OUT/sweep.log
