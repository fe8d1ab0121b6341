#!/bin/bash
# call.sh [picks]: one GPU, about a minute: the probe's rows to $OUT/sync.json (rewritten after every row); LIMIT
# (seconds, default 180) fits it to the device time left. `picks` (carry .stage/s1, built by
# experiments/2026-12-06_l2_prefetch/build_stage.sh; about 3 minutes more) then runs the 3B int4 step by the fused
# backend (token table int4 too) with TRITON_PRINT_AUTOTUNING=1: each kernel's blocks as its autotuning picks them,
# hence how many programs each launches.
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout ${LIMIT:-180} python3 experiments/2026-12-07_sync_cost_probe/probe.py --out $OUT/sync.json > $OUT/sync.log 2>&1
echo "probe rc=$?"; tail -22 $OUT/sync.log
if [ "$1" = picks ]; then
  [ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
  . /tmp/st/env.sh
  TRITON_PRINT_AUTOTUNING=1 TAG=_picks BACKENDS=fused bash experiments/2026-12-05_int4_words_h100/one.sh \
    meta-llama/Llama-3.2-3B-Instruct int4t 128 240
  grep -h -B3 "best config" $OUT/fc_*_picks.log | tail -60
fi
