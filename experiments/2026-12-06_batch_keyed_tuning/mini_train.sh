#!/bin/bash
# `mini` chain, call 4 of 5 (carry .stage/mm2/c): the last weight part, then `mini` trained (600 steps, SIGTERM at
# 440 s). Call 5: ../2026-12-06_mini_tpot_export/points.sh 425.
bash experiments/2026-12-06_int4_rows_per_program/mini_a.sh c && bash experiments/2026-12-06_int4_rows_per_program/train.sh 440
