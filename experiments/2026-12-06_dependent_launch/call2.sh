#!/bin/bash
# SmolLM2 shape, bf16 and int4 (token table int4 too), PDL on and off; then the GPU tier's fused-step tests
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
for a in "int4t 64 70" "bf16 0 70"; do
  set -- $a
  for pdl in 1 0; do
    SOTA_TRITON_PDL=$pdl TAG=_pdl$pdl BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
      bundled:smollm2-135m-instruct $1 $2 $3
    echo "[$(( $(date +%s) - t0 ))s]"
  done
done
SOTA_TRITON_AUTOTUNE=0 timeout 250 python -m pytest -q -m gpu tests/test_decode_step.py tests/test_int4.py \
  tests/test_int4_embedding.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$? [$(( $(date +%s) - t0 ))s]"; tail -3 $OUT/gpu_tests.log
