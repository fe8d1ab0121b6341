#!/bin/bash
# The two points of conf/sweep/mini_tpot_export.yaml on `mini` trained for 20 steps (TPOT depends on the shapes,
# the storage and the kernels, not on the weights' values; task=eval needs a checkpoint), one at a time, each
# measured from its export in a fresh process; results, logs and the frontier to $OUT. Needs the staged wheels
# (/tmp/st) and all four weight parts in /tmp/mm (../2026-12-06_batch_keyed_tuning/mini_stage.sh,
# ../2026-12-06_int4_rows_per_program/mini_a.sh). $1: seconds before SIGTERM for the sweep. Run again, it keeps
# the checkpoint and the points already done (the int4 point alone takes about 190 s on one H100).
mkdir -p "$OUT/results"
. /tmp/st/env.sh
bash experiments/2026-12-06_int4_rows_per_program/weights.sh || exit 1
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
t0=$(date +%s)
[ -f /tmp/mini/checkpoints/last.ckpt ] || timeout -s TERM 150 python3 run.py experiment=mini_gpu trainer.max_steps=20 \
  corpus.on_missing_voice=skip logger=csv measure.real_clips=2 hydra.run.dir=/tmp/mini > $OUT/train.log 2>&1
echo "train rc=$? [$(( $(date +%s) - t0 ))s]"; t0=$(date +%s)
timeout -s TERM $1 python3 sweep.py sweep=mini_tpot_export sweep_dir=/tmp/sweep workers=1 \
  +sweep.base.corpus.on_missing_voice=skip +sweep.base.init_from=/tmp/mini/checkpoints/last.ckpt > $OUT/sweep.log 2>&1
echo "sweep rc=$? [$(( $(date +%s) - t0 ))s]"
bash experiments/2026-12-06_mini_tpot_export/collect.sh /tmp/sweep
