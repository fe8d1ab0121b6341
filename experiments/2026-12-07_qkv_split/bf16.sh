#!/bin/bash
# One GPU (carry .stage/s1), under 2 minutes, right after `call.sh` on the same machine: 3B bf16 by the fused step
# with q/k/v's split, profiled by kernel role.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
TAG=_qkv EXTRA="--profile fused" BACKENDS=fused \
  bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct bf16 128 100
grep -A9 "| kernel | role" $OUT/fc_*.log | head -9
