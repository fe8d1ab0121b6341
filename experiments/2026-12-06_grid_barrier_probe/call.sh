#!/bin/bash
# One GPU, nothing to stage (torch and Triton only), about 2-3 minutes: the probe's rows to $OUT/probe.json.
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 420 python3 experiments/2026-12-06_grid_barrier_probe/probe.py --out $OUT/probe.json > $OUT/probe.log 2>&1
echo "probe rc=$?"; tail -12 $OUT/probe.log
