#!/bin/bash
# One GPU (carry .stage/s1), under 2 minutes: q/k/v's split rows against torch at 3,072 inputs, and each kernel as
# its autotuning picks it against torch, in bf16 on the device.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 80 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider \
  -k "q_k_v_split_rows or match_the_torch_operations_on_cuda" > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
