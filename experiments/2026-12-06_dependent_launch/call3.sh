#!/bin/bash
# SmolLM2 shape int4 (token table int4 too) and bf16 with PDL (call 2's int4 benches ran out of time autotuning);
# then the 3B int4 step with a variant patched in here: each kernel lets the next launch before its own wait
# (gdc_launch_dependents first), so launches may run more than one kernel ahead
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
for a in "int4t 64 150" "bf16 0 90"; do
  set -- $a
  TAG=_pdl1 BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh bundled:smollm2-135m-instruct $1 $2 $3
  echo "[$(( $(date +%s) - t0 ))s]"
done
python3 - <<'PY'
p = "sota/models/decode_triton.py"
s = open(p).read()
old = "        gdc_wait()\n        gdc_launch_dependents()\n"
assert s.count(old) == 1
open(p, "w").write(s.replace(old, "        gdc_launch_dependents()\n        gdc_wait()\n"))
PY
TAG=_early BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 230
echo "[$(( $(date +%s) - t0 ))s]"
