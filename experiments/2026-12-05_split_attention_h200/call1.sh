#!/bin/bash
# Call 1: stage; GPU tier of the fused-step tests; SmolLM2 bf16 fused; 3B int4t fused (autotune choices printed); profile.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-05_split_attention_h200/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; tail -2 $OUT/stage.log; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader 2>&1 | tee $OUT/gpu.txt
timeout 170 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda" -p no:cacheprovider --timeout 150 > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|Error|assert" $OUT/gpu_tests.log | head -12
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh bundled:smollm2-135m-instruct bf16 0 90; echo "[$(( $(date +%s) - t0 ))s]"
TRITON_PRINT_AUTOTUNING=1 BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 150; echo "[$(( $(date +%s) - t0 ))s]"
grep -i "best config" $OUT/fc_meta*int4t.log | sed 's/Triton autotuning for function //' | cut -c1-200 | sort | uniq -c | head -20
left=$(( 560 - ($(date +%s) - t0) ))
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
[ $left -gt 40 ] && { timeout $left python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=meta-llama/Llama-3.2-3B-Instruct \
  quant=int4_weight quant.int4_layout=compact quant.int4_kernel=triton quant.group_size=128 quant.parts.embeddings=int4_weight \
  --modes strict --backends fused --no-hf-generate measure.real_clips=0 measure.iterations=5 --profile fused > $OUT/profile_3b_int4t.log 2>&1
  echo "profile rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "proj|qkv|attend|Self CUDA|Name" $OUT/profile_3b_int4t.log | cut -c1-160 | head -14; }
