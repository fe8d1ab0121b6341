#!/bin/bash
# Call 1 (one GPU, carry .stage/s1 and .stage/old): ../2026-12-06_batch_keyed_tuning/call.sh, then this folder's
# diff applied on the machine and the fused step's GPU tests run with it (h200/gpu_tests.log).
mkdir -p "$OUT"
which git patch > $OUT/tools.txt 2>&1
bash experiments/2026-12-06_batch_keyed_tuning/call.sh
git apply experiments/2026-12-06_attention_in_qkv/attention_in_qkv.diff 2>$OUT/apply.err || patch -p1 < experiments/2026-12-06_attention_in_qkv/attention_in_qkv.diff >> $OUT/apply.err 2>&1
echo "apply rc=$?"; grep -c ATTEND_IN_QKV sota/models/decode_kernels.py
. /tmp/st/env.sh
timeout 170 python3 -m pytest -q -m gpu tests/test_decode_step.py -p no:cacheprovider -k "not every_candidate" > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log
