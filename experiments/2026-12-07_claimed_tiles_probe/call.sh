#!/bin/bash
# One GPU, nothing to stage (torch and Triton only), about 2 minutes for both shapes: the probe's rows to
# $OUT/claimed.json (rewritten after every row). SHAPES (default 3b_layer,3072) and LIMIT (seconds, default 240)
# fit it to the device time left.
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout ${LIMIT:-240} python3 experiments/2026-12-07_claimed_tiles_probe/claimed.py --shapes ${SHAPES:-3b_layer,3072} \
  --out $OUT/claimed.json > $OUT/claimed.log 2>&1
echo "probe rc=$?"; tail -8 $OUT/claimed.log
