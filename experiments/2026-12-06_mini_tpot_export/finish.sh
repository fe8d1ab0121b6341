#!/bin/bash
# `mini`'s training resumed to its end (train.sh), then the sweep's points (points.sh) in the call's remaining time.
t0=$(date +%s)
[ -f /tmp/mini/results.json ] || bash experiments/2026-12-06_mini_tpot_export/train.sh 400
left=$(( 570 - ($(date +%s) - t0) ))
[ -f /tmp/mini/results.json ] && bash experiments/2026-12-06_mini_tpot_export/points.sh $left
