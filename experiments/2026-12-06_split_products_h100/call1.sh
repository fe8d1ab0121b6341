#!/bin/bash
# kernel checks on the device, then whole fused steps (strict, batch 1), int4t with the step's kernels by role
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 120 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda and not every" -p no:cacheprovider > $OUT/gpu_kernels.log 2>&1
echo "kernel tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^FAILED|^E  " $OUT/gpu_kernels.log | head -12
export TRITON_PRINT_AUTOTUNING=1
for a in "meta-llama/Llama-3.2-3B-Instruct int4t 128 150 --profile" "meta-llama/Llama-3.2-3B-Instruct bf16 0 130 --profile" "bundled:smollm2-135m-instruct bf16 0 80" "bundled:smollm2-135m-instruct int4t 64 90 --profile"; do
  set -- $a; EXTRA="${5:+$5 fused}" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh $1 $2 $3 $4; echo "[$(( $(date +%s) - t0 ))s]"
  n=$(echo $1 | tr ':/.' '___')_$2
  grep -E "^\| [a-z_0-9]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_$n.log | head -9
  grep -E "best config" $OUT/fc_$n.log | grep -v _gemm | sort | uniq -c | head -12
done
