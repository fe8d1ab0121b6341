#!/bin/bash
# 3B int4 (token table int4 too), PDL on, profiled by kernel role: the int4 products prefetching their codes into
# L2 before they wait (this tree with prefetch.diff applied), then the kernels as they were before
# (.stage/old/decode_triton.py, carried), on the same machine; then 3B bf16 (the ratio's other side) and the fused
# step's GPU tests with this tree.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
run() {  # TAG QUANT TIMEOUT
  TAG=$1 EXTRA="--profile fused" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
    meta-llama/Llama-3.2-3B-Instruct $2 128 $3
  echo "[$(( $(date +%s) - t0 ))s]"
}
export TRITON_PRINT_AUTOTUNING=1
run _after int4t 170
cp sota/models/decode_triton.py /tmp/after.py && cp .stage/old/decode_triton.py sota/models/decode_triton.py
run _before int4t 150
cp /tmp/after.py sota/models/decode_triton.py
run _after bf16 90
timeout 150 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
echo "[$(( $(date +%s) - t0 ))s]"
for f in $OUT/fc_*int4t*.log; do echo "$f"; grep -A12 "| kernel | role" $f | head -14; done
