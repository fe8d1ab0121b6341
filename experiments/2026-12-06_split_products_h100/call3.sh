#!/bin/bash
# the GPU tier of the fused step and of the int4 kernel's other users
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 300 python -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider > $OUT/gpu_tests_step.log 2>&1
echo "step tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^FAILED|^E  " $OUT/gpu_tests_step.log | head -12
timeout 150 python -m pytest -q -m gpu tests/test_int4.py tests/test_int4_embedding.py tests/test_fuse.py tests/test_export_int4.py -p no:cacheprovider > $OUT/gpu_tests_int4.log 2>&1
echo "int4 tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^FAILED|^E  " $OUT/gpu_tests_int4.log | head -12
