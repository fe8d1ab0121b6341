#!/bin/bash
# Call 4: fused-step GPU tests (kernels and whole steps); SmolLM2 bf16 and 3B int4t fused with kernel roles; 3B bf16 fused.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-05_split_attention_h200/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader 2>&1 | tee $OUT/gpu.txt
timeout 80 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda and not every_candidate" -p no:cacheprovider --timeout 70 > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^E  .*(values out|Error)" $OUT/gpu_tests.log | head -8
export TRITON_PRINT_AUTOTUNING=1
for a in "bundled:smollm2-135m-instruct bf16 0 70 --profile" "meta-llama/Llama-3.2-3B-Instruct bf16 0 80" "meta-llama/Llama-3.2-3B-Instruct int4t 128 120 --profile"; do
  set -- $a; EXTRA="${5:+$5 fused}" BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh $1 $2 $3 $4; echo "[$(( $(date +%s) - t0 ))s]"
  n=$(echo $1 | tr ':/.' '___')_$2
  grep -E "^\| [a-z_0-9]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_$n.log | head -8
  grep -i "best config" $OUT/fc_$n.log | grep -o "SPLIT_L[^;]*" | sort | uniq -c
done
# then, on the same warm machine: the GPU tier's every-candidate tests
# timeout 110 python -m pytest -q -m gpu tests/test_decode_step.py -k "every_candidate" -p no:cacheprovider --timeout 100
