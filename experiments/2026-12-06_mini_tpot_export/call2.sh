#!/bin/bash
# Resume `mini`'s training (the same command), then the two points of conf/sweep/mini_tpot_export.yaml, one at a
# time; the sweep dir lives under /tmp and call3.sh resumes it if this call's time runs out.
mkdir -p "$OUT"
. /tmp/st/env.sh
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
t0=$(date +%s)
if [ ! -f /tmp/mini/results.json ]; then
  python3 run.py experiment=mini_gpu corpus.on_missing_voice=skip logger=csv hydra.run.dir=/tmp/mini > $OUT/train2.log 2>&1
  echo "train rc=$? [$(( $(date +%s) - t0 ))s]"
fi
cp /tmp/mini/results.json $OUT/base_mini_results.json
bash experiments/2026-12-06_mini_tpot_export/points.sh
echo "[$(( $(date +%s) - t0 ))s]"
