#!/bin/bash
# whole fused steps, strict, batch 1: SmolLM2 bf16 / int4t (g64), 3B bf16 / int4t (g128); int4t with kernel roles
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_packed_int4_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
export TRITON_PRINT_AUTOTUNING=1
for a in "bundled:smollm2-135m-instruct bf16 0 80" "bundled:smollm2-135m-instruct int4t 64 90 --profile" "meta-llama/Llama-3.2-3B-Instruct bf16 0 110" "meta-llama/Llama-3.2-3B-Instruct int4t 128 130 --profile"; do
  set -- $a; EXTRA="${5:+$5 fused}" BACKENDS=fused bash experiments/2026-12-06_packed_int4_h100/one.sh $1 $2 $3 $4; echo "[$(( $(date +%s) - t0 ))s]"
  n=$(echo $1 | tr ':/.' '___')_$2
  grep -E "^\| [a-z_0-9]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_$n.log | head -9
done
