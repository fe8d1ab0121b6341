#!/bin/bash
# `mini`'s shapes with random weights (SmolLM2-135M's shape, a random Whisper-tiny-shaped encoder, the projector),
# two training steps: the bf16 point and the all-int4 point (round to nearest), each evaluated with the fused step under
# Lightning's test loop, exported, and measured in a fresh process from its export, one after the other.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
export SOTA_CACHE=/tmp/sota_cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
T="model=mini connector=projector task=train trainer.max_steps=2 llm=shape_only llm.arch=bundled:smollm2-135m-instruct llm.device=cuda
encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}
trainer=gpu corpus.on_missing_voice=skip backend=fused measure.from_export=true measure.warmup=10 measure.iterations=50 measure.real_clips=0 logger=csv
quant.group_size=64 quant.int4_kernel=triton"
t0=$(date +%s)
for p in "bf16|quant=bf16 quant.targets=[llm,connector] quant.skip=[]" \
         "int4|quant=int4_weight quant.targets=[llm] quant.int4_layout=compact quant.parts.embeddings=int4_weight quant.parts.encoder=int4_weight quant.parts.connector=int4_weight"; do
  name=${p%%|*}
  timeout 130 python3 run.py $T ${p#*|} hydra.run.dir=/tmp/shape_$name > $OUT/shape_$name.log 2>&1
  echo "$name rc=$? [$(( $(date +%s) - t0 ))s]"; tail -2 $OUT/shape_$name.log
  cp /tmp/shape_$name/results.json $OUT/shape_$name.json 2>/dev/null
done
