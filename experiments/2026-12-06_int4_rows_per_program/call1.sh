#!/bin/bash
# Stages the machine (wheels; the last part of the weight wheels, installed for the `mini` calls after), then 3B
# int4 (token table int4 too), PDL on, profiled by kernel role: this tree's autotuning tables (more rows a program),
# then the tables as committed before (.stage/old/decode_triton.py, carried), on the same machine; then the new
# tables' rows held to torch on the device.
mkdir -p "$OUT" /tmp/mm
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
if [ ! -f /tmp/mm/installed ]; then
  cp .stage/mm2/d/* /tmp/mm/
  touch /tmp/mm/d_copied
fi
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
run() {  # TAG QUANT TIMEOUT
  TAG=$1 EXTRA="--profile fused" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
    meta-llama/Llama-3.2-3B-Instruct $2 128 $3
  echo "[$(( $(date +%s) - t0 ))s]"
}
export TRITON_PRINT_AUTOTUNING=1
run _after int4t 200
cp sota/models/decode_triton.py /tmp/after.py && cp .stage/old/decode_triton.py sota/models/decode_triton.py
run _before int4t 160
cp /tmp/after.py sota/models/decode_triton.py
timeout 120 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider \
  -k "every_candidate and int4" > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
echo "[$(( $(date +%s) - t0 ))s]"
for f in $OUT/fc_*int4t*.log; do echo "$f"; grep -A10 "| kernel | role" $f | head -10; done
