#!/bin/bash
# One GPU (carry .stage/s1), about 6 minutes: 3B int4 (token table int4 too) by the fused step with gate/up kept
# from splitting (nogated.diff, in a copy of the tree), then as committed, in one call. Each run tunes in its own
# Triton cache: the diff changes a heuristic, not a kernel's source, so the cache would hand one run's picks to the
# other.
mkdir -p "$OUT"
t0=$(date +%s)
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
rm -rf /tmp/nogated && mkdir /tmp/nogated && tar --exclude=./.stage --exclude=./.git -cf - . | tar -C /tmp/nogated -xf -
(cd /tmp/nogated && patch -p1 < experiments/2026-12-07_gated_split_h200/nogated.diff > $OUT/apply.log 2>&1; echo "apply rc=$?")
for run in "/tmp/nogated _nogated" "$PWD _committed"; do
  set -- $run
  (cd $1 && PYTHONPATH=$1:$PYTHONPATH TRITON_CACHE_DIR=/tmp/tc$2 TAG=$2 BACKENDS=fused \
    bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 ${LIMIT:-175})
  echo "[$(( $(date +%s) - t0 ))s]"
done
