#!/bin/bash
# 3B bf16 with this tree's kernels (the int4 step's ratio to it), then the fused step's GPU tests (every row of the
# autotuning tables against torch, whole steps against transformers)
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
TAG=_after BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct bf16 128 200
echo "[$(( $(date +%s) - t0 ))s]"
timeout 300 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
echo "[$(( $(date +%s) - t0 ))s]"
