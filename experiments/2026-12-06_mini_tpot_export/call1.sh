#!/bin/bash
# Stage the machine, then train `mini` (experiment=mini_gpu) until a SIGTERM at 500 s; call2.sh resumes it.
# The corpus, the feature cache and the run live under /tmp, which outlives the call while the machine is held.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
t0=$(date +%s)
timeout -s TERM 500 python3 run.py experiment=mini_gpu corpus.on_missing_voice=skip logger=csv \
  hydra.run.dir=/tmp/mini > $OUT/train1.log 2>&1
echo "train rc=$? [$(( $(date +%s) - t0 ))s]"
tail -5 $OUT/train1.log; ls -la /tmp/mini/checkpoints
