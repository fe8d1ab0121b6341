#!/bin/bash
# Call 2: the bf16 int4 product's error by case; int4 GPU tests; SmolLM2 fused profile; 3B bf16 fused; int4 products cold.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-05_split_attention_h200/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
SOTA_TRITON_AUTOTUNE=0 timeout 60 python experiments/2026-12-05_split_attention_h200/dbg.py > $OUT/dbg.log 2>&1; echo "dbg rc=$?"; grep -E "^test|BAD" $OUT/dbg.log | cut -c1-250 | head -30; grep -c "rel err" $OUT/dbg.log
timeout 90 python -m pytest -q -m gpu tests/test_int4.py -p no:cacheprovider > $OUT/int4_tests.log 2>&1; echo "int4 tests rc=$? [$(( $(date +%s) - t0 ))s]"; tail -2 $OUT/int4_tests.log
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
timeout 80 python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=bundled:smollm2-135m-instruct quant=bf16 \
  --modes strict --backends fused --no-hf-generate measure.real_clips=0 measure.iterations=5 --profile fused > $OUT/profile_smollm2.log 2>&1
echo "profile rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "proj|qkv|attend|argmax|index|Self CUDA|Name" $OUT/profile_smollm2.log | cut -c1-160 | head -14
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh bundled:smollm2-135m-instruct bf16 0 80; echo "[$(( $(date +%s) - t0 ))s]"
BACKENDS=fused bash experiments/2026-12-05_split_attention_h200/one.sh meta-llama/Llama-3.2-3B-Instruct bf16 0 150; echo "[$(( $(date +%s) - t0 ))s]"
timeout $(( 570 - ($(date +%s) - t0) )) python experiments/2026-12-05_split_attention_h200/cold.py $OUT/cold.json > $OUT/cold.log 2>&1; echo "cold rc=$?"; cut -c1-500 $OUT/cold.log | grep -v "^ *$" | tail -12
