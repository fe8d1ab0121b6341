#!/bin/bash
# 3B int4 (token table int4 too), PDL on, profiled by kernel role: attention with its first tile loaded before it
# waits on qkv_rope (this tree), then the kernels as they were before (.stage/old/decode_triton.py, carried), on the
# same machine; autotuning printed
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
export TRITON_PRINT_AUTOTUNING=1
run() {  # TAG QUANT TIMEOUT
  TAG=$1 EXTRA="--profile fused" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
    meta-llama/Llama-3.2-3B-Instruct $2 128 $3
  echo "[$(( $(date +%s) - t0 ))s]"
}
run _after int4t 250
cp sota/models/decode_triton.py /tmp/after.py && cp .stage/old/decode_triton.py sota/models/decode_triton.py
run _before int4t 170
cp /tmp/after.py sota/models/decode_triton.py
for f in $OUT/fc_*.log; do echo "$f"; grep "best config" $f | grep -v _gemm | sort | uniq -c; grep -A12 "| kernel | role" $f; done
