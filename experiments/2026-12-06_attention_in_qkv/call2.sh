#!/bin/bash
# Call 2 (the same machine, carry .stage/s1): the diff applied on the machine, then call.sh without its GPU tests
# (call 1 ran them): 3B int4 and bf16, attention inside q/k/v and split, profiled (h200/fc_*).
mkdir -p "$OUT"
git apply experiments/2026-12-06_attention_in_qkv/attention_in_qkv.diff 2>$OUT/apply.err || patch -p1 < experiments/2026-12-06_attention_in_qkv/attention_in_qkv.diff >> $OUT/apply.err 2>&1
echo "apply rc=$?"
sed -e '/^timeout 150 python3 -m pytest/,/^echo "gpu tests/d' -e '/tail -3 \$OUT\/gpu_tests.log/d' experiments/2026-12-06_attention_in_qkv/call.sh > /tmp/cb.sh
grep -c pytest /tmp/cb.sh; bash /tmp/cb.sh
