#!/bin/bash
# One GPU, nothing to stage (torch and Triton only), about 3-4 minutes for both shapes: the probe's rows to
# $OUT/probe.json (rewritten after every row). SHAPES (default 3b_layer,3072) and LIMIT (seconds, default 420)
# fit it to the device time left.
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout ${LIMIT:-420} python3 experiments/2026-12-06_grid_barrier_probe/probe.py --shapes ${SHAPES:-3b_layer,3072} \
  --out $OUT/probe.json > $OUT/probe.log 2>&1
echo "probe rc=$?"; tail -12 $OUT/probe.log
