#!/bin/bash
# A/B: TPOT of mini with runs + proportional attention, the commit before the change (checked out at
# /tmp/wt_before: git worktree add /tmp/wt_before <commit>) against this checkout (/work/main), alternating.
A="experiment=mini_gpu trainer=cpu measure.device=cpu backend=eager tokens=merge tokens.keep=0.68 tokens.layer=2 tokens.grouping=runs tokens.attention=proportional measure.real_clips=0 measure.warmup=3 measure.iterations=30 measure.e2e_repeats=1"
for r in 1 2 3; do
  for side in before after; do
    d=/work/main; [ $side = before ] && d=/tmp/wt_before
    (cd $d && /work/main/.venv/bin/python -m sota.tools.bench $A --modes strict --backends eager --no-hf-generate --out /tmp/ab_${side}_$r.json > /tmp/ab_${side}_$r.log 2>&1)
    echo "$side $r rc=$? $(grep -E '^\| eager' /tmp/ab_${side}_$r.log)"
  done
done
