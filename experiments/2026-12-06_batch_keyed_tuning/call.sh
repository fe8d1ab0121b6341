#!/bin/bash
# SmolLM2's shape (random weights), fused step: TPOT at batch 1 after a batch of 64 was decoded in the same process,
# with the kernels as committed before (.stage/old: autotuning not keyed on the batch) and with this tree's. Each
# process has its own empty Triton cache.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
t0=$(date +%s)
one() {  # TAG FIRST QUANT
  TRITON_CACHE_DIR=/tmp/tc_$1_$2_$3 TRITON_PRINT_AUTOTUNING=1 timeout 100 \
    python experiments/2026-12-06_batch_keyed_tuning/batch_then_one.py bundled:smollm2-135m-instruct \
    --first $2 --quant $3 --out $OUT/$1_$2_$3.json > $OUT/$1_$2_$3.log 2>&1
  echo "$1 first=$2 $3 rc=$? $(tail -1 $OUT/$1_$2_$3.log | cut -c1-200) [$(( $(date +%s) - t0 ))s]"
}
for f in decode_triton decode_kernels; do cp sota/models/$f.py /tmp/new_$f.py; cp .stage/old/$f.py sota/models/$f.py; done
one before 64 bf16
for f in decode_triton decode_kernels; do cp /tmp/new_$f.py sota/models/$f.py; done
one after 64 bf16
