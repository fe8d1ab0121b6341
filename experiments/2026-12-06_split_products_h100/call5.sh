#!/bin/bash
# the four steps on whichever card comes for a call that names nvidia-h200 (no profiles)
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
for a in "meta-llama/Llama-3.2-3B-Instruct bf16 0 60" "meta-llama/Llama-3.2-3B-Instruct int4t 128 70" "bundled:smollm2-135m-instruct bf16 0 45" "bundled:smollm2-135m-instruct int4t 64 45"; do
  set -- $a; BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh $1 $2 $3 $4; echo "[$(( $(date +%s) - t0 ))s]"
done
