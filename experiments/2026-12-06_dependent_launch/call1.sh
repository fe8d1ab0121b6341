#!/bin/bash
# 3B shape, int4 (token table int4 too) and bf16: the fused step with programmatic dependent launch on and off,
# each pair back to back on the same machine
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
for a in "int4t 128 110" "bf16 0 100"; do
  set -- $a
  for pdl in 1 0; do
    SOTA_TRITON_PDL=$pdl TAG=_pdl$pdl BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
      meta-llama/Llama-3.2-3B-Instruct $1 $2 $3
    echo "[$(( $(date +%s) - t0 ))s]"
  done
done
