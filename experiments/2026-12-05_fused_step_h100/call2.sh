#!/bin/bash
# bf16 kernel tests on the device; then compact int4 (Triton packing) against bf16 in the same call, compiled and
# fused: the 3B shape, then SmolLM2's.
[ -f /tmp/st/env.sh ] || { CHECK=0 bash .stage/mm/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
mkdir -p "$OUT"
timeout 100 python -m pytest -q -m gpu tests/test_decode_step.py -k on_cuda -p no:cacheprovider > $OUT/gpu_tests2.log 2>&1
echo "tests rc=$?"; tail -2 $OUT/gpu_tests2.log
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
for run in "meta-llama/Llama-3.2-3B-Instruct:int4:128" "meta-llama/Llama-3.2-3B-Instruct:bf16:" "bundled:smollm2-135m-instruct:int4:64" "bundled:smollm2-135m-instruct:bf16:"; do
  g=${run##*:}; rest=${run%:*}; q=${rest##*:}; arch=${rest%:*}
  Q="quant=bf16"; [ "$q" = int4 ] && Q="quant=int4_weight quant.int4_layout=compact quant.int4_kernel=triton quant.group_size=$g"
  n=$(echo $arch | tr ':/.' '___')_$q
  timeout 170 python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=$arch $Q \
    --modes strict --backends compiled,fused --no-hf-generate measure.real_clips=0 measure.warmup=5 \
    measure.iterations=30 measure.e2e_repeats=1 --out $OUT/fc_$n.json > $OUT/fc_$n.log 2>&1
  echo "bench $n rc=$?"; grep -E "^\| (compiled|fused)|floor|not used" $OUT/fc_$n.log | head -5
done
