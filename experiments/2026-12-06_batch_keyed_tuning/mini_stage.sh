#!/bin/bash
# `mini` chain, call 1 of 5 (carry .stage/s1 and .stage/mm2/d): the wheels staged, the weight wheels' last part to
# /tmp/mm. Calls 2-3: ../2026-12-06_int4_rows_per_program/mini_a.sh a, then b (carry .stage/mm2/a, .stage/mm2/b).
mkdir -p "$OUT" /tmp/mm
bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"
cp .stage/mm2/d/* /tmp/mm/ && ls /tmp/mm
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
