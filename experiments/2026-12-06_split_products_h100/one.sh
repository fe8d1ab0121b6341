#!/bin/bash
# one.sh ARCH bf16|int4|int4t GROUP TIMEOUT: ../2026-12-05_int4_words_h100/one.sh with $EXTRA added to the bench's
# arguments (here --profile fused: the step's kernels by role, in the same process).
sed 's/measure.e2e_repeats=1 --out/measure.e2e_repeats=1 $EXTRA --out/' experiments/2026-12-05_int4_words_h100/one.sh |
  bash -s -- "$@"
