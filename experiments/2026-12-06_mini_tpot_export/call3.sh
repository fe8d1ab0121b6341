#!/bin/bash
# Only if call2.sh ran out of time: the sweep resumed (finished points are kept).
mkdir -p "$OUT"
. /tmp/st/env.sh
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
bash experiments/2026-12-06_mini_tpot_export/points.sh
