#!/bin/bash
# One GPU (carry .stage/s1), about 8 minutes: 3B int4 (token table int4 too) and bf16 by the fused step with q/k/v's
# split, q/k/v's split rows against torch on the device, then 3B int4 without the split (qkv.diff reversed, in a
# copy of the tree): the figures first, so a short budget drops the comparison. PROFILE=1 profiles the int4
# step with it by kernel role (about 80 s more). BUDGET (seconds, default 580) skips, and says so, a run whose limit
# would pass it.
mkdir -p "$OUT"
t0=$(date +%s)
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
rm -rf /tmp/before && mkdir /tmp/before && tar --exclude=./.stage --exclude=./.git -cf - . | tar -C /tmp/before -xf -
(cd /tmp/before && patch -R -p1 < experiments/2026-12-07_qkv_split/qkv.diff > $OUT/unapply.log 2>&1; echo "unapply rc=$?")
run() {  # DIR TAG QUANT TIMEOUT EXTRA
  if (( $(date +%s) - t0 + $4 > ${BUDGET:-580} )); then echo "skipped $3$2: its $4 s would pass BUDGET"; return; fi
  (cd $1 && PYTHONPATH=$1:$PYTHONPATH TAG=$2 EXTRA="$5" BACKENDS=fused \
    bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct $3 128 $4)
  echo "[$(( $(date +%s) - t0 ))s]"
}
if [ "$PROFILE" = 1 ]; then run $PWD _qkv int4t 225 "--profile fused"; else run $PWD _qkv int4t 165 ""; fi
run $PWD _qkv bf16 100 ""  # its split rows add candidates: 65 s ran out on an H100
if (( $(date +%s) - t0 + 60 <= ${BUDGET:-580} )); then
  timeout 60 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider -k "q_k_v_split_rows" \
    > $OUT/gpu_tests.log 2>&1
  echo "gpu tests rc=$?"; tail -2 $OUT/gpu_tests.log
else echo "skipped the gpu test: its 60 s would pass BUDGET"; fi
run /tmp/before _before int4t 150 ""
for f in $OUT/fc_*.log; do echo "$f"; grep -E "^\| fused" $f | head -2; grep -A9 "| kernel | role" $f | head -9; done
