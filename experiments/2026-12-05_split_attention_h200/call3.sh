#!/bin/bash
# Call 3: GPU tier of the fused-step tests; SmolLM2 bf16, 3B bf16, 3B int4t fused, each with its step's kernels by role.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-05_split_attention_h200/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
timeout 200 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda" -p no:cacheprovider --timeout 180 > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^E  .*values out" $OUT/gpu_tests.log | head -12
export EXTRA="--profile fused"
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh bundled:smollm2-135m-instruct bf16 0 90; echo "[$(( $(date +%s) - t0 ))s]"
grep -E "^\| [a-z_]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_bundled*bf16.log | head -9
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh meta-llama/Llama-3.2-3B-Instruct bf16 0 130; echo "[$(( $(date +%s) - t0 ))s]"
grep -E "^\| [a-z_]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_meta*bf16.log | head -9
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 150; echo "[$(( $(date +%s) - t0 ))s]"
grep -E "^\| [a-z_0-9]+ \| (1 of|2 of|3 of|outside)" $OUT/fc_meta*int4t.log | head -9
