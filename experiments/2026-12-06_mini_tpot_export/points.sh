#!/bin/bash
# The sweep's points (resumed where an earlier call left them), their results and fresh-process benches to $OUT.
python3 sweep.py sweep=mini_tpot_export sweep_dir=/tmp/sweep workers=1 +sweep.base.init_from=/tmp/mini/checkpoints/last.ckpt \
  +sweep.base.corpus.on_missing_voice=skip > $OUT/sweep.log 2>&1
echo "sweep rc=$?"
mkdir -p $OUT/results
for p in /tmp/sweep/points/*; do
  [ -f $p/results.json ] && cp $p/results.json $OUT/results/$(basename $p).json
  [ -f $p/run.log ] && cp $p/run.log $OUT/results/$(basename $p).log
done
cp /tmp/sweep/frontier.csv /tmp/sweep/sweep.log $OUT/ 2>/dev/null
ls -R /tmp/sweep | head -40
