#!/bin/bash
# call.sh PART...: one GPU, the wheels staged (carry .stage/s1 on the machine's first call); the parts in order:
#   test:    the profile's graphed table checked on the device (the gpu tier of tests/test_measure.py).
#   profile: the 3B step by the fused backend, int4 (token table int4 too), with --profile fused: its kernels by
#            role one after another, then replayed from its graph by each kernel's share of the critical path.
#            LIMIT (seconds for the run, default 300).
mkdir -p "$OUT"
[ -f /tmp/st/env.sh ] || { bash experiments/2026-12-06_split_products_h100/a.sh > $OUT/stage.log 2>&1; echo "stage rc=$?"; }
. /tmp/st/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
for part in "$@"; do case $part in
  test) timeout 240 python3 -m pytest -q -m gpu tests/test_measure.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
        echo "gpu tests rc=$?"; tail -3 $OUT/gpu_tests.log ;;
  profile) TAG=_profile EXTRA="--profile fused" BACKENDS=fused bash experiments/2026-12-06_split_products_h100/one.sh \
             meta-llama/Llama-3.2-3B-Instruct int4t 128 ${LIMIT:-300}
           grep -A14 "in its graph" $OUT/fc_*_profile.log ;;
  *) echo "call.sh test|profile ..."; exit 2 ;;
esac; done
