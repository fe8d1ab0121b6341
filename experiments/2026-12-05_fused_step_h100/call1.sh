#!/bin/bash
# The fused decode step: its GPU tests first, then fused against compiled side by side in one process per shape
# (SmolLM2-135M and Llama-3.2-3B, random bf16 weights), then a profile of the fused SmolLM2 step.
[ -f /tmp/st/env.sh ] || { CHECK=0 bash .stage/mm/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
mkdir -p "$OUT"
timeout ${T_S:-150} python -m pytest -q -m gpu tests/test_decode_step.py tests/test_decoding.py -k "not compiled" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "tests rc=$?"; tail -3 $OUT/gpu_tests.log
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
for arch in ${ARCHS:-bundled:smollm2-135m-instruct meta-llama/Llama-3.2-3B-Instruct}; do
  n=$(echo $arch | tr ':/.' '___')
  timeout ${B_S:-200} python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=$arch quant=bf16 \
    --modes strict --backends ${BACKENDS:-compiled,fused} --no-hf-generate measure.real_clips=0 measure.warmup=5 \
    measure.iterations=30 measure.e2e_repeats=1 --out $OUT/fused_$n.json > $OUT/bench_$n.log 2>&1
  echo "bench $n rc=$?"; grep -E "^\| (compiled|fused)|floor|fused" $OUT/bench_$n.log | head -6
done
[ -n "$SKIP_PROFILE" ] || { timeout 100 python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda \
  llm.arch=bundled:smollm2-135m-instruct quant=bf16 --modes strict --backends fused --no-hf-generate \
  measure.real_clips=0 measure.iterations=5 --profile fused > $OUT/profile_smollm2.log 2>&1; echo "profile rc=$?"; }
