"""Operators dispatched inside the decoder layers per forward (prefill, then each decode step) of a 30-layer
random model, merging runs of audio tokens before layer 2 with plain or proportional attention.

    python experiments/2026-12-05_merge_ops_cpu/opcount.py     (from the repository root)
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from torch.utils._python_dispatch import TorchDispatchMode
from test_token_merge import decisive_model
from test_model import batch_for

class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))

def ops(attention):
    model = decisive_model(3, layers=30)
    if attention != "none":
        model.merge_tokens(keep=0.68, layer=2, grouping="runs", attention=attention)
    b = batch_for(model, [2.0], ["asr"])
    marks = []
    c = Count()
    model.llm.model.layers[0].register_forward_pre_hook(lambda *a: marks.append(c.n))
    model.llm.model.norm.register_forward_pre_hook(lambda *a: marks.append(-c.n))
    with torch.no_grad(), c:
        model.generate_ids(b, max_new_tokens=6)
    starts = [m for m in marks if m >= 0]; ends = [-m for m in marks if m < 0]
    return [e - s for s, e in zip(starts, ends)]   # ops inside the decoder layers, per forward

for a in ("none", "plain", "proportional"):
    print(a, ops(a))
