#!/bin/bash
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_packed_int4_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader 2>&1 | tee $OUT/gpu.txt
timeout 300 python experiments/2026-12-06_packed_int4_h100/probe.py $OUT/probe.json > $OUT/probe.log 2>&1; echo "probe rc=$? [$(( $(date +%s) - t0 ))s]"
grep -v "^ *$" $OUT/probe.log | cut -c1-700 | tail -20
