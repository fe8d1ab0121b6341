#!/bin/bash
# probe (prefetch variants), then the fused step's GPU tests with the packed int4 product
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_packed_int4_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 200 python experiments/2026-12-06_packed_int4_h100/probe.py $OUT/probe.json > $OUT/probe.log 2>&1; echo "probe rc=$? [$(( $(date +%s) - t0 ))s]"
grep -v "^ *$" $OUT/probe.log | cut -c1-900 | tail -8
timeout 300 python -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider -x > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? [$(( $(date +%s) - t0 ))s]"; grep -E "passed|failed|^E  .*(values out|Error)|^FAILED" $OUT/gpu_tests.log | head -12
