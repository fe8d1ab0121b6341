#!/bin/bash
# one.sh ARCH bf16|int4 GROUP TIMEOUT: compiled vs fused, one process, random weights of the shape.
arch=$1; q=$2; g=$3
T="encoder.path=null encoder.config={d_model:384,encoder_layers:4,encoder_attention_heads:6,encoder_ffn_dim:1536,num_mel_bins:80,max_source_positions:1500}"
Q="quant=bf16"; [ "${q%t}" = int4 ] && Q="quant=int4_weight quant.int4_layout=compact quant.int4_kernel=triton quant.group_size=$g"
[ "$q" = int4t ] && Q="$Q quant.parts.embeddings=int4_weight"   # the token table (and tied head) in int4 too
n=$(echo $arch | tr ':/.' '___')_$q${TAG}
timeout $4 python -m sota.tools.bench model=mini $T llm=shape_only llm.device=cuda llm.arch=$arch $Q \
  --modes strict --backends ${BACKENDS:-compiled,fused} --no-hf-generate measure.real_clips=0 measure.warmup=5 \
  measure.iterations=30 measure.e2e_repeats=1 --out $OUT/fc_$n.json > $OUT/fc_$n.log 2>&1
echo "bench $n rc=$?"; grep -E "^\| (compiled|fused)|floor|not used" $OUT/fc_$n.log | head -5
