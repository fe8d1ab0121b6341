#!/bin/bash
# The two points of conf/sweep/mini_tpot_export.yaml on the trained `mini`, one at a time (resumed where an earlier
# call left them); their results, logs and fresh-process benches to $OUT.
mkdir -p "$OUT/results"
. /tmp/st/env.sh
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cp /tmp/mini/results.json $OUT/base_mini_results.json
t0=$(date +%s)
timeout -s TERM $1 python3 sweep.py sweep=mini_tpot_export sweep_dir=/tmp/sweep workers=1 \
  +sweep.base.init_from=/tmp/mini/checkpoints/last.ckpt +sweep.base.corpus.on_missing_voice=skip > $OUT/sweep.log 2>&1
echo "sweep rc=$? [$(( $(date +%s) - t0 ))s]"
bash experiments/2026-12-06_mini_tpot_export/collect.sh
