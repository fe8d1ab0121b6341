"""Every row of ROPE_INT4 at the 3B width in bf16 on the device: q/k/v's largest error against the torch operation,
the value there, and how many values the gpu test's bound of the time (by each value alone) refused.
Run on the GPU machine after staging (`. /tmp/st/env.sh`): python3 experiments/2026-12-07_qkv_split/rows_error.py"""
import sys

import torch
import triton

sys.path.insert(0, "tests")
import test_decode_step as T  # noqa: E402
from sota.models import decode_triton as D  # noqa: E402

tuner = D.qkv_rope_int4
table, names = T.TABLES["qkv_rope_int4"]
t = T.kernel_inputs(torch.bfloat16, hidden=3072, int4_group=32)
want = T.run_ops(t, only=("q", "k", "v"))
for row in D.ROPE_INT4:
    tuner.configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1])]
    tuner.cache.clear()
    got = T.run_ops(T.on_cuda(t), only=("q", "k", "v"))
    for o in ("q", "k", "v"):
        d = (got[o].float().cpu() - want[o].float()).abs()
        w = want[o].float().abs()
        print(row, o, "maxerr %.4f" % d.max().item(), "at|want| %.3f" % w.flatten()[d.argmax()].item(),
              "max|want| %.2f" % w.max().item(), "n>tol", ((d - (2e-2 + 1.6e-2 * w)) > 0).sum().item(), flush=True)
