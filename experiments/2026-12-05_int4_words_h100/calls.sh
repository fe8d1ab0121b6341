#!/bin/bash
# The three calls on one H100 (kind nvidia-h100-x1), as run (this folder's one.sh and kernels.py were then
# .stage/mm/one.sh and gv_bench.py); /tmp/st/env.sh is the staged environment (the wheels of FIELD-NOTES).

# ---- call 1 ----
# Call 1: stage; fused GPU tests; SmolLM2 bf16 (PDL on / off); 3B int4 compiled vs fused; int4 product sweep.
[ -f /tmp/st/env.sh ] || { CHECK=0 bash .stage/mm/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
mkdir -p "$OUT"
t0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader 2>&1 | tee $OUT/gpu.txt
timeout 100 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; tail -3 $OUT/gpu_tests.log
bash experiments/2026-12-05_int4_words_h100/one.sh bundled:smollm2-135m-instruct bf16 0 100; echo "[$(( $(date +%s) - t0 ))s]"
SOTA_PDL=0 BACKENDS=fused TAG=_nopdl bash experiments/2026-12-05_int4_words_h100/one.sh bundled:smollm2-135m-instruct bf16 0 60; echo "[$(( $(date +%s) - t0 ))s]"
bash experiments/2026-12-05_int4_words_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4 128 130; echo "[$(( $(date +%s) - t0 ))s]"
left=$(( 560 - ($(date +%s) - t0) ))
[ $left -gt 30 ] && { timeout $left python experiments/2026-12-05_int4_words_h100/kernels.py $OUT/gv.json > $OUT/gv.log 2>&1; echo "gv rc=$?"; cut -c1-300 $OUT/gv.log; }

# ---- call 2 ----
[ -f /tmp/st/env.sh ] || { CHECK=0 bash .stage/mm/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
export SOTA_PDL=0 PYTHONPATH=$PWD:$PYTHONPATH
mkdir -p "$OUT"; t0=$(date +%s)
bash experiments/2026-12-05_int4_words_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 150; echo "[$(( $(date +%s) - t0 ))s]"
bash experiments/2026-12-05_int4_words_h100/one.sh meta-llama/Llama-3.2-3B-Instruct bf16 0 130; echo "[$(( $(date +%s) - t0 ))s]"
timeout $(( 530 - ($(date +%s) - t0) )) python experiments/2026-12-05_int4_words_h100/kernels.py $OUT/gv.json > $OUT/gv.log 2>&1; echo "gv rc=$?"; cut -c1-300 $OUT/gv.log

# ---- call 3 ----
[ -f /tmp/st/env.sh ] || { CHECK=0 bash .stage/mm/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
export SOTA_PDL=0
mkdir -p "$OUT"; t0=$(date +%s)
timeout 110 python -m pytest -q -m gpu tests/test_decode_step.py -k "on_cuda" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; tail -3 $OUT/gpu_tests.log
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
timeout $(( 250 - ($(date +%s) - t0) )) python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=meta-llama/Llama-3.2-3B-Instruct \
  quant=int4_weight quant.int4_layout=compact quant.int4_kernel=triton quant.group_size=128 quant.parts.embeddings=int4_weight \
  --modes strict --backends fused --no-hf-generate measure.real_clips=0 measure.iterations=5 --profile fused > $OUT/profile_3b_int4t.log 2>&1
echo "profile rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "proj|qkv|attend|Self CUDA|Name" $OUT/profile_3b_int4t.log | head -14
