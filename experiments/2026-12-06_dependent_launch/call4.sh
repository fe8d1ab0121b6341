#!/bin/bash
# 3B int4 (token table int4 too), PDL on: the int4 tables with their AHEAD = 1 rows (codes loaded one step ahead,
# in registers), then the same tables without them (patched here), on the same machine; autotuning printed
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
t0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
export TRITON_PRINT_AUTOTUNING=1
TAG=_ahead BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 240
echo "[$(( $(date +%s) - t0 ))s]"
python3 - <<'PY'
import re
p = "sota/models/decode_triton.py"
s = open(p).read()
for name in ("PROJ_INT4", "ROPE_INT4"):
    m = re.search(rf"^{name} = \(\(.*?\)\)", s, re.S | re.M)
    rows = eval(m.group(0).split("=", 1)[1])
    s = s.replace(m.group(0), f"{name} = {tuple(r for r in rows if r[-2] == 0)!r}")
open(p, "w").write(s)
PY
grep -A1 "^PROJ_INT4 =\|^ROPE_INT4 =" sota/models/decode_triton.py | cut -c1-150
TAG=_behind BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh meta-llama/Llama-3.2-3B-Instruct int4t 128 110
echo "[$(( $(date +%s) - t0 ))s]"
for f in $OUT/fc_*ahead.log $OUT/fc_*behind.log; do echo "$f"; grep "best config" $f | grep -v _gemm | sort | uniq -c; done
