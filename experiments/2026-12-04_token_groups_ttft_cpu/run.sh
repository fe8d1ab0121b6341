#!/bin/bash
# TTFT and TPOT of audio-token merging by pairs and by runs, plain and proportional attention, on the CPU:
# `mini` as trained on the GPU (experiment=mini_gpu: the window projector, 10 audio tokens per second), its
# bundled weights, the benchmark's 10 s noise clip (100 audio tokens), strict mode, batch 1, eager decoding.
# Four rounds, each point in its own process, the points interleaved.
#   bash experiments/2026-12-04_token_groups_ttft_cpu/run.sh OUT_DIR
set -u
OUT=${1:?an output folder}
mkdir -p "$OUT"
C="experiment=mini_gpu trainer=cpu encoder.dtype=float32 measure.warmup=3 measure.iterations=15 measure.real_clips=0
   measure.e2e_repeats=1 measure.cpu_threads=2"
declare -A P=(
  [ref]=""
  [pairs_068]="tokens=merge tokens.keep=0.68 tokens.layer=2"
  [pairs_068_prop]="tokens=merge tokens.keep=0.68 tokens.layer=2 tokens.attention=proportional"
  [runs_068]="tokens=merge tokens.keep=0.68 tokens.layer=2 tokens.grouping=runs"
  [runs_068_prop]="tokens=merge tokens.keep=0.68 tokens.layer=2 tokens.grouping=runs tokens.attention=proportional"
  [runs_05_prop]="tokens=merge tokens.keep=0.5 tokens.layer=2 tokens.grouping=runs tokens.attention=proportional"
  [runs_04_prop]="tokens=merge tokens.keep=0.4 tokens.layer=2 tokens.grouping=runs tokens.attention=proportional"
)
for round in 1 2 3 4; do
  for name in ref pairs_068 pairs_068_prop runs_068 runs_068_prop runs_05_prop runs_04_prop; do
    python -m sota.tools.bench $C ${P[$name]} --modes strict --backends eager --no-hf-generate \
      --out "$OUT/${name}_r$round.json" > "$OUT/${name}_r$round.log" 2>&1 || echo "$name round $round failed"
  done
done
