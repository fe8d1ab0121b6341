#!/bin/bash
# One GPU (carry .stage/s1), under 3 minutes: the fused step's GPU tests (whole steps in CUDA graphs against
# transformers, the kernels against torch in bf16), with gated and three-part splits in the tables.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 170 python3 -m pytest -q -m gpu tests/test_decode_step.py tests/test_decoding.py -p no:cacheprovider \
  -k "not every_candidate" > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
