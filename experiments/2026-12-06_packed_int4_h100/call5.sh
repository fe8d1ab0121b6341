#!/bin/bash
# H200: SmolLM2 bf16, 3B bf16 and int4t fused steps (call4.sh without SmolLM2 int4t and the profiles)
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_packed_int4_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
for a in "bundled:smollm2-135m-instruct bf16 0 70" "meta-llama/Llama-3.2-3B-Instruct bf16 0 100" "meta-llama/Llama-3.2-3B-Instruct int4t 128 110"; do
  set -- $a; BACKENDS=fused bash experiments/2026-12-06_packed_int4_h100/one.sh $1 $2 $3 $4; echo "[$(( $(date +%s) - t0 ))s]"
done
