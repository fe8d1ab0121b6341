#!/bin/bash
# One GPU (carry .stage/s1), about 9 minutes: the 3B step by the fused backend in four runs, each pair in one call:
#   int4 (token table int4 too) with gate/up kept from splitting (nogated.diff), then as committed;
#   bf16 with q/k/v kept from splitting (../2026-12-07_qkv_split/qkv.diff reversed), then as committed.
# Each variant runs in a copy of the tree and tunes in a Triton cache of its own: nogated.diff changes a heuristic,
# not a kernel's source, and the cache would hand one run's picks to the other. LIMIT (seconds an int4 run, default
# 175; bf16 runs get 100) and BUDGET (seconds in all, default 580: a run whose limit would pass it is skipped, and
# said so) fit it to the device time left.
mkdir -p "$OUT"
t0=$(date +%s)
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
variant() {  # DIR PATCH-ARGS DIFF: a copy of the tree with DIFF applied (PATCH-ARGS -R: reversed)
  rm -rf $1 && mkdir $1 && tar --exclude=./.stage --exclude=./.git -cf - . | tar -C $1 -xf -
  (cd $1 && patch $2 -p1 < $3 > $OUT/$(basename $1).patch.log 2>&1; echo "$(basename $1) patch rc=$?")
}
variant /tmp/nogated "" experiments/2026-12-07_gated_split_h200/nogated.diff
variant /tmp/noqkvsplit -R experiments/2026-12-07_qkv_split/qkv.diff
run() {  # DIR TAG QUANT TIMEOUT
  if (( $(date +%s) - t0 + $4 > ${BUDGET:-580} )); then echo "skipped $3$2: its $4 s would pass BUDGET"; return; fi
  (cd $1 && PYTHONPATH=$1:$PYTHONPATH TRITON_CACHE_DIR=/tmp/tc$2 TAG=$2 BACKENDS=fused \
    bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct $3 128 $4)
  echo "[$(( $(date +%s) - t0 ))s]"
}
run /tmp/nogated _nogated int4t ${LIMIT:-175}
run $PWD _committed int4t ${LIMIT:-175}
run /tmp/noqkvsplit _noqkvsplit bf16 100
run $PWD _committed bf16 100
