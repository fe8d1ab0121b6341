#!/bin/bash
# Attention inside qkv_rope (attention_in_qkv.diff, applied to this tree before the call) against the split
# attention kernel, on one GPU: the fused step's GPU tests with the diff (whole steps in CUDA graphs against
# transformers, caches under 512 slots: attention inside qkv_rope), then 3B int4 (token table int4 too) and 3B bf16,
# profiled by kernel role, with attention inside qkv_rope (ATTEND_IN_QKV = 512) and split (ATTEND_IN_QKV = 0), in
# the same call.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider -k "not every_candidate" \
  > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
run() {  # TAG QUANT TIMEOUT
  TAG=$1 EXTRA="--profile fused" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
    meta-llama/Llama-3.2-3B-Instruct $2 128 $3
  echo "[$(( $(date +%s) - t0 ))s]"
}
run _in_qkv int4t 170
sed -i 's/^ATTEND_IN_QKV = 512$/ATTEND_IN_QKV = 0/' sota/models/decode_kernels.py
run _split int4t 110
run _split bf16 80
sed -i 's/^ATTEND_IN_QKV = 0$/ATTEND_IN_QKV = 512/' sota/models/decode_kernels.py
run _in_qkv bf16 80
for f in $OUT/fc_*.log; do echo "$f"; grep -A9 "| kernel | role" $f | head -9; done
