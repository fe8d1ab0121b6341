#!/bin/bash
# One GPU (carry .stage/s1), about 8 minutes: 3B int4 (token table int4 too) and 3B bf16 by the fused step,
# profiled by kernel role, with gated and three-part splits (this tree) and without them (split.diff reversed, in a
# copy of the tree), in the same call. The fused step's GPU tests first: `tests.sh`, a call of its own.
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
rm -rf /tmp/before && mkdir /tmp/before && tar --exclude=./.stage --exclude=./.git -cf - . | tar -C /tmp/before -xf -
(cd /tmp/before && { git apply -R experiments/2026-12-07_gated_split/split.diff 2>/dev/null ||
  patch -R -p1 < experiments/2026-12-07_gated_split/split.diff; } > $OUT/unapply.log 2>&1; echo "unapply rc=$?")
run() {  # DIR TAG QUANT TIMEOUT
  (cd $1 && PYTHONPATH=$1:$PYTHONPATH TAG=$2 EXTRA="--profile fused" BACKENDS=fused \
    bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct $3 128 $4)
  echo "[$(( $(date +%s) - t0 ))s]"
}
run $PWD _split int4t 170
run $PWD _split bf16 90
run /tmp/before _before int4t 150
run /tmp/before _before bf16 90
for f in $OUT/fc_*.log; do echo "$f"; grep -E "^\| fused" $f | head -2; grep -A9 "| kernel | role" $f | head -9; done
